//! Pipelines on Redis Cluster. A cluster node only answers for the keys of its own slots, so
//! redis-rs sends a pipeline to one node and refuses one whose commands name keys of several
//! slots. callrelay's pipelines that serve one (account, identity) stay inside its hash tag;
//! those that batch work for many (dedupe outcomes, presence renewals) are split here into one
//! pipeline per slot, sent concurrently, and their answers put back in the original order.
//! Splitting changes nothing a caller could observe: a plain pipeline was never atomic, and
//! the commands for one key keep their order.

use std::collections::HashMap;

use redis::cluster_routing::Slot;
use redis::{Arg, Cmd, Pipeline};

/// One part of a split pipeline: the commands of one slot and where their answers go.
pub struct Part {
    pub pipeline: Pipeline,
    pub positions: Vec<usize>,
}

/// `None` when the pipeline can go to one node as it is (its keys share one slot, or it is a
/// transaction, which must not be split); otherwise one part per slot. Commands without a key
/// join the first part.
pub fn split(pipeline: &Pipeline) -> Option<Vec<Part>> {
    if pipeline.is_transaction() {
        return None;
    }
    let slots: Vec<Option<Slot>> = pipeline
        .cmd_iter()
        .map(|cmd| first_key(cmd).map(Slot::for_key))
        .collect();
    let first = slots.iter().flatten().next()?;
    if slots.iter().flatten().all(|s| s == first) {
        return None;
    }
    let mut parts: Vec<Part> = Vec::new();
    let mut by_slot: HashMap<Slot, usize> = HashMap::new();
    for (position, (cmd, slot)) in pipeline.cmd_iter().zip(&slots).enumerate() {
        let index = match slot {
            Some(slot) => *by_slot.entry(*slot).or_insert_with(|| {
                parts.push(Part {
                    pipeline: Pipeline::new(),
                    positions: Vec::new(),
                });
                parts.len() - 1
            }),
            None => {
                if parts.is_empty() {
                    let slot = slots.iter().flatten().next().copied()?;
                    by_slot.insert(slot, 0);
                    parts.push(Part {
                        pipeline: Pipeline::new(),
                        positions: Vec::new(),
                    });
                }
                0
            }
        };
        parts[index].pipeline.add_command(cmd.clone());
        parts[index].positions.push(position);
    }
    Some(parts)
}

/// The key a command is routed by: the first key of a script call, the first argument of
/// every other command callrelay pipelines (all of them take their key first).
fn first_key(cmd: &Cmd) -> Option<Vec<u8>> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .map(|a| match a {
            Arg::Simple(bytes) => bytes,
            _ => &[][..],
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let keys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            (keys > 0).then(|| args.get(3).map(|k| k.to_vec()))?
        }
        b"PING" | b"WAIT" | b"ECHO" | b"INFO" | b"TIME" => None,
        _ => args.get(1).map(|k| k.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hash_tag_is_not_split() {
        let mut p = redis::pipe();
        p.hgetall("cr:{AC1:bob}:bindings")
            .hgetall("cr:{AC1:bob}:sockets")
            .cmd("SET")
            .arg("cr:{AC1:bob}:msg:RM1")
            .arg("pending");
        assert!(split(&p).is_none());
    }

    #[test]
    fn several_slots_are_split_in_order() {
        let mut p = redis::pipe();
        p.del("cr:{AC1:bob}:msg:1")
            .del("cr:{AC1:alice}:msg:2")
            .del("cr:{AC1:bob}:msg:3")
            .cmd("PING");
        let parts = split(&p).expect("split");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].positions, vec![0, 2, 3]);
        assert_eq!(parts[1].positions, vec![1]);
        assert_eq!(parts[0].pipeline.len(), 3);
    }

    #[test]
    fn scripts_are_routed_by_their_first_key() {
        let mut eval = redis::cmd("EVALSHA");
        eval.arg("abc").arg(1).arg("cr:{AC1:bob}:bindings").arg("x");
        assert_eq!(first_key(&eval), Some(b"cr:{AC1:bob}:bindings".to_vec()));
        let mut keyless = redis::cmd("EVALSHA");
        keyless.arg("abc").arg(0);
        assert_eq!(first_key(&keyless), None);
    }

    #[test]
    fn transactions_are_never_split() {
        let mut p = redis::pipe();
        p.atomic().del("{a}x").del("{b}y");
        assert!(split(&p).is_none());
    }
}
