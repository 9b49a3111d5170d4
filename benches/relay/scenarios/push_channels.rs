//! Scenario 5's channel rows: pushes per second straight through the APNs and FCM channels
//! (`PushApp::push`, no webhook, no Redis) against the mocks, with one and with four HTTP/2
//! connections, 200 pushes in flight. They say what the push clients themselves carry, and
//! what a second connection buys, apart from the rest of the relay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callrelay::channels::{Outcome, PushApp};
use callrelay::config::AppSettings;
use callrelay::domain::{
    AccountSid, ApnsEnvironment, Binding, BindingId, CallNotification, Identity, PushChannel,
    PushType,
};
use callrelay::metrics::Metrics;
use callrelay_testkit::apns::{MockApns, TeamKey};
use callrelay_testkit::fcm::MockFcm;
use futures_util::StreamExt;

use crate::Bench;
use crate::procs::{ACCOUNT, Error};
use crate::report::{Better, Samples};

const IN_FLIGHT: usize = 200;
const CONNECTIONS: [usize; 2] = [1, 4];

fn binding(channel: PushChannel, address: &str, app: &str) -> Binding {
    let now = time::OffsetDateTime::now_utc();
    let apns = channel == PushChannel::Apns;
    Binding {
        id: BindingId::parse("bench-device").expect("a valid id"),
        account_sid: AccountSid::parse(ACCOUNT).expect("a valid account"),
        identity: Identity::parse("bench").expect("a valid identity"),
        channel,
        address: address.into(),
        app: app.into(),
        apns_environment: apns.then_some(ApnsEnvironment::Production),
        push_type: apns.then_some(PushType::Voip),
        device_id: None,
        ttl_seconds: 3600,
        created_at: now,
        updated_at: now,
        expires_at: now + time::Duration::hours(1),
    }
}

fn settings(toml: &str) -> Result<AppSettings, Error> {
    let config = callrelay::config::from_toml_str(toml).map_err(|e| e.to_string())?;
    Ok(config.apps[0].settings.clone())
}

/// Pushes through `channel` for `duration`, `IN_FLIGHT` at a time; pushes per second. Every
/// push must be delivered.
async fn measure(
    channel: &Arc<dyn PushApp>,
    target: &Binding,
    notification: &CallNotification,
    duration: Duration,
) -> Result<f64, Error> {
    let started = Instant::now();
    let outcomes: Vec<Outcome> = futures_util::stream::iter(0..)
        .take_while(|_| std::future::ready(started.elapsed() < duration))
        .map(|_| async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            channel.push(target, notification, deadline).await.outcome
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = started.elapsed();
    if let Some(failed) = outcomes.iter().find(|o| **o != Outcome::Delivered) {
        return Err(format!("a push through the channel was not delivered: {failed:?}").into());
    }
    Ok(outcomes.len() as f64 / elapsed.as_secs_f64())
}

pub async fn run(
    b: &mut Bench,
    key: &TeamKey,
    apns: &MockApns,
    fcm: &MockFcm,
) -> Result<(), Error> {
    let notification = CallNotification::parse(bytes::Bytes::from(format!(
        r#"{{"twi_account_sid":"{ACCOUNT}","twi_to":"client:bench","twi_message_id":"RMbench","twi_message_type":"twilio.voice.call"}}"#
    )))
    .map_err(|e| format!("{e:?}"))?;
    let mut samples = Samples::default();
    for connections in CONNECTIONS {
        let extra = format!("connections = {connections}");
        let apns_channel: Arc<dyn PushApp> =
            match settings(&apns.token_app("ios", "com.example.bench", key, &extra))? {
                AppSettings::Apns(s) => Arc::new(
                    callrelay::channels::apns::ApnsChannel::new(
                        "ios",
                        &s,
                        Arc::new(Metrics::new()),
                    )
                    .map_err(|e| format!("{}: {}", e.key, e.message))?,
                ),
                AppSettings::Fcm(_) => return Err("expected an APNs app".into()),
            };
        let fcm_channel: Arc<dyn PushApp> = match settings(&format!(
            "{}{extra}\n",
            fcm.app_toml("android", "callrelay-bench")
        ))? {
            AppSettings::Fcm(s) => Arc::new(
                callrelay::channels::fcm::FcmChannel::new("android", &s, Arc::new(Metrics::new()))
                    .map_err(|e| format!("{}: {}", e.key, e.message))?,
            ),
            AppSettings::Apns(_) => return Err("expected an FCM app".into()),
        };
        let targets = [
            (
                "APNs",
                apns_channel,
                binding(PushChannel::Apns, &format!("{:064x}", 1), "ios"),
            ),
            (
                "FCM",
                fcm_channel,
                binding(PushChannel::Fcm, "fcm-device-token-bench", "android"),
            ),
        ];
        for (name, channel, target) in &targets {
            // Warm up: the TLS handshakes and the provider or access token.
            measure(channel, target, &notification, Duration::from_millis(500)).await?;
            for _ in 0..b.runs {
                let rate = measure(channel, target, &notification, b.duration).await?;
                samples.add(&format!("{name} {connections}"), rate);
            }
        }
    }
    for name in ["APNs", "FCM"] {
        for connections in CONNECTIONS {
            let plural = if connections == 1 { "" } else { "s" };
            b.row(
                "5. push (mocks)",
                &format!(
                    "{name} channel alone, pushes/s, {connections} connection{plural}, {IN_FLIGHT} in flight"
                ),
                &samples,
                (&format!("{name} {connections}"), None),
                Better::More,
                "pushes/s",
            );
        }
    }
    Ok(())
}
