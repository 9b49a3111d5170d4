//! The OpenAPI document: the committed `openapi.json` is what the code serves, and it
//! describes every route the router has.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

fn committed() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap()
}

fn generated() -> String {
    serde_json::to_string_pretty(&callrelay::http::openapi::document()).unwrap() + "\n"
}

#[test]
fn the_committed_document_is_the_generated_one() {
    assert!(
        committed() == generated(),
        "openapi.json is out of date: regenerate it with `cargo run -q -- openapi > openapi.json`"
    );
}

#[test]
fn every_route_is_documented_and_every_documented_path_is_routed() {
    let router_source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/mod.rs")).unwrap();
    let public = router_source
        .split("pub fn public_router")
        .nth(1)
        .and_then(|rest| rest.split("pub fn admin_router").next())
        .unwrap();
    let routed: BTreeSet<String> = public
        .split(".route(")
        .skip(1)
        .map(|rest| {
            rest.trim_start()
                .trim_start_matches('"')
                .split('"')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    let doc = callrelay::http::openapi::document();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    assert!(!routed.is_empty());
    assert_eq!(routed, documented);
}

#[tokio::test]
async fn the_service_serves_it_and_each_operation_exists() {
    let app = spawn_app().await;
    let served: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, callrelay::http::openapi::document());
    for (path, item) in served["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let concrete = path.replace("{id}", "some-id");
            let r = app
                .http
                .request(method.to_uppercase().parse().unwrap(), app.url(&concrete))
                .send()
                .await
                .unwrap();
            assert_ne!(
                r.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            let text = r.text().await.unwrap();
            assert!(
                !text.contains("urn:callrelay:problem:not-found"),
                "{method} {path} is not routed"
            );
        }
    }
}
