//! Typed bindings-API calls for tests that are about something else (delivery, failover,
//! metrics): register as an identity's token holder, look bindings up. Tests of the bindings
//! API itself send their requests with `TestApp::api`.

use callrelay::domain::{Binding, PushChannel};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Answer, TestApp, token};

impl TestApp {
    /// Registers a binding on `channel` to `address` as `identity`'s token holder, with the
    /// members of `more` (`{"push_type": "alert"}`…); asserts `201` and returns it.
    pub async fn register(
        &self,
        identity: &str,
        channel: PushChannel,
        address: &str,
        more: Value,
    ) -> Binding {
        let mut body = json!({"channel": channel.as_str(), "address": address});
        body.as_object_mut()
            .unwrap()
            .extend(more.as_object().unwrap().clone());
        let r = self
            .api(Method::POST, "/v1/bindings", &token(identity), Some(body))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        serde_json::from_value(r.body).unwrap()
    }

    pub async fn register_apns(&self, identity: &str, address: &str) -> Binding {
        self.register(identity, PushChannel::Apns, address, json!({}))
            .await
    }

    pub async fn register_fcm(&self, identity: &str, address: &str) -> Binding {
        self.register(identity, PushChannel::Fcm, address, json!({}))
            .await
    }

    /// `PUT /v1/bindings/{id}` of an FCM binding to `token-<identity>`: the answer, for tests
    /// that count on its status (a store that fails over, refuses writes…).
    pub async fn put_fcm(&self, identity: &str, id: &str) -> Answer {
        let binding = json!({"channel": "fcm", "address": format!("token-{identity}")});
        self.api(
            Method::PUT,
            &format!("/v1/bindings/{id}"),
            &token(identity),
            Some(binding),
        )
        .await
    }

    /// `GET /v1/bindings/{id}` as `identity`'s token holder.
    pub async fn get_binding(&self, identity: &str, id: &str) -> Answer {
        self.api(
            Method::GET,
            &format!("/v1/bindings/{id}"),
            &token(identity),
            None,
        )
        .await
    }

    /// `identity`'s stored bindings.
    pub async fn bindings_of(&self, identity: &str) -> Vec<Binding> {
        let r = self
            .api(Method::GET, "/v1/bindings", &token(identity), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        serde_json::from_value(r.body["bindings"].clone()).unwrap()
    }
}
