//! `SCAN` over every master: one server, or each master of a cluster (which `SCAN` alone
//! cannot do: each node knows only its own keys). Only `callrelay migrate` and the check for
//! a store with nothing of the earlier layout use it.

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, RedisResult, Value};

use super::connect::Conn;

/// How many keys one `SCAN` call looks at.
const PAGE: u64 = 1000;

impl Conn {
    /// The next page of keys matching `pattern` on every master whose scan is not finished.
    /// `cursors` holds each master and its cursor; empty, it is filled with every master
    /// (cursor 0); a master whose cursor comes back 0 is done and leaves the list.
    pub async fn scan_masters(
        &mut self,
        pattern: &str,
        cursors: &mut Vec<(Option<(String, u16)>, u64)>,
    ) -> RedisResult<Vec<String>> {
        if cursors.is_empty() {
            *cursors = self.masters().await?.into_iter().map(|m| (m, 0)).collect();
        }
        let mut keys = Vec::new();
        let mut next = Vec::with_capacity(cursors.len());
        for (node, cursor) in cursors.drain(..) {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(PAGE);
            let (cursor, page): (u64, Vec<String>) =
                redis::from_redis_value(self.on(node.as_ref(), cmd).await?)?;
            keys.extend(page);
            if cursor != 0 {
                next.push((node, cursor));
            }
        }
        *cursors = next;
        Ok(keys)
    }

    /// Every master: `None` for the one server of a single connection.
    async fn masters(&mut self) -> RedisResult<Vec<Option<(String, u16)>>> {
        match self {
            Conn::Single { .. } => Ok(vec![None]),
            Conn::Cluster(conn) => {
                let nodes: String = redis::from_redis_value(
                    conn.route_command(
                        redis::cmd("CLUSTER").arg("NODES").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                    )
                    .await?,
                )?;
                let masters = masters_in(&nodes);
                let covered: usize = masters.iter().map(|(_, slots)| slots).sum();
                if covered < SLOTS {
                    // A scan that missed a master would miss its keys.
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "the cluster's healthy masters do not serve every slot",
                        format!("{covered} of {SLOTS}: try again once the cluster is healthy"),
                    )));
                }
                Ok(masters.into_iter().map(|(m, _)| Some(m)).collect())
            }
        }
    }

    async fn on(&mut self, node: Option<&(String, u16)>, cmd: Cmd) -> RedisResult<Value> {
        match (self, node) {
            (Conn::Cluster(conn), Some((host, port))) => {
                let route = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                conn.route_command(cmd, RoutingInfo::SingleNode(route))
                    .await
            }
            (Conn::Single { conn, .. }, _) => cmd.query_async(conn).await,
            (Conn::Cluster(conn), None) => {
                conn.route_command(
                    cmd,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                )
                .await
            }
        }
    }
}

/// Hash slots of a Redis Cluster.
const SLOTS: usize = 16_384;

/// The healthy masters serving slots in a `CLUSTER NODES` answer (`<id> <host>:<port>@<bus>
/// <flags> <master id> <ping> <pong> <epoch> <link> <slot or range>…`), with how many slots
/// each serves.
fn masters_in(nodes: &str) -> Vec<((String, u16), usize)> {
    nodes
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let flags = words.get(2)?;
            if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
                return None;
            }
            // Ranges `a-b` and single slots; `[…]` marks a slot being moved, still served here.
            let slots: usize = words
                .iter()
                .skip(8)
                .filter(|w| !w.starts_with('['))
                .filter_map(|w| match w.split_once('-') {
                    Some((a, b)) => Some(b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?),
                    None => w.parse::<usize>().ok().map(|_| 1),
                })
                .sum();
            if slots == 0 {
                return None;
            }
            let address = words.get(1)?.split('@').next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some(((host.to_owned(), port.parse().ok()?), slots))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masters_serving_slots_are_read_from_cluster_nodes() {
        let nodes = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
6ec2 127.0.0.1:30003@40003 master,fail - 1426238316232 0 3 disconnected
9a1b 127.0.0.1:30005@40005 master - 0 1426238316232 5 connected
";
        assert_eq!(
            masters_in(nodes),
            vec![
                (("127.0.0.1".to_owned(), 30002), 5462),
                (("127.0.0.1".to_owned(), 30001), 5461)
            ]
        );
        // The failed master's slots are served by nobody: a scan would miss them.
        let covered: usize = masters_in(nodes).iter().map(|(_, n)| n).sum();
        assert!(covered < SLOTS);
        let whole = "a 127.0.0.1:1@2 master - 0 0 1 connected 0-16383 [5->-b]\n";
        assert_eq!(
            masters_in(whole),
            vec![(("127.0.0.1".to_owned(), 1), SLOTS)]
        );
    }
}
