//! A push channel that records what it is given and answers what the test tells it. Used
//! where the subject is the relay (bindings, dedupe, dead-binding removal), not the push
//! protocol; the APNs and FCM channels have their own mocks.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use callrelay::channels::{Outcome, PushApp, Report};
use callrelay::domain::{Binding, CallNotification};
use tokio::time::Instant;

#[derive(Default)]
pub struct FakeChannel {
    pub sent: Mutex<Vec<(String, Bytes)>>,
    script: Mutex<VecDeque<Outcome>>,
    delay: Mutex<Option<Duration>>,
}

impl FakeChannel {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The next deliveries answer these outcomes, in order; afterwards, `Delivered`.
    pub fn answer(&self, outcomes: impl IntoIterator<Item = Outcome>) {
        self.script.lock().unwrap().extend(outcomes);
    }

    /// Every delivery takes this long from now on.
    pub fn slow(&self, delay: Duration) {
        *self.delay.lock().unwrap() = Some(delay);
    }

    /// Addresses delivered to, in order.
    pub fn addresses(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|(a, _)| a.clone())
            .collect()
    }

    pub fn payloads(&self) -> Vec<Bytes> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| p.clone())
            .collect()
    }
}

#[async_trait]
impl PushApp for FakeChannel {
    async fn push(
        &self,
        binding: &Binding,
        notification: &CallNotification,
        _deadline: Instant,
    ) -> Report {
        self.sent
            .lock()
            .unwrap()
            .push((binding.address.clone(), notification.raw.clone()));
        let delay = *self.delay.lock().unwrap();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        self.script.lock().unwrap().pop_front().map_or_else(
            || Report::plain(Outcome::Delivered, 1),
            |o| Report::plain(o, 1),
        )
    }
}
