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

/// Every example in the document (request bodies, answers, parameters) is valid against the
/// schema beside it, by the same JSON Schema validator the service checks bindings with.
#[test]
fn every_example_matches_its_schema() {
    let doc = callrelay::http::openapi::document();
    let mut checked = 0;
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let mut found = 0;
            let mut media: Vec<&Value> = Vec::new();
            if let Some(content) = operation["requestBody"]["content"].as_object() {
                media.extend(content.values());
            }
            for response in operation["responses"].as_object().unwrap().values() {
                let response = resolve(&doc, response);
                if let Some(content) = response["content"].as_object() {
                    media.extend(content.values());
                }
            }
            for m in media {
                for example in m["examples"]
                    .as_object()
                    .into_iter()
                    .flat_map(|e| e.values())
                {
                    assert_valid(&doc, &m["schema"], &example["value"], path);
                    found += 1;
                }
            }
            let parameters = operation["parameters"]
                .as_array()
                .into_iter()
                .chain(item["parameters"].as_array())
                .flatten();
            for parameter in parameters {
                let parameter = resolve(&doc, parameter);
                if let Some(example) = parameter.get("example") {
                    assert_valid(&doc, &parameter["schema"], example, path);
                    found += 1;
                }
            }
            assert!(found > 0, "{method} {path} has no example");
            operations.insert(format!("{method} {path}"));
            checked += found;
        }
    }
    assert!(operations.len() >= 9, "{operations:?}");
    assert!(checked >= 20, "only {checked} examples");
}

fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap(),
        None => value,
    }
}

fn assert_valid(doc: &Value, schema: &Value, instance: &Value, path: &str) {
    // The schema with the document's components beside it, so `#/components/...` resolves.
    let mut root = schema.clone();
    if let Some(object) = root.as_object_mut() {
        object.insert("components".into(), doc["components"].clone());
        object.insert(
            "$schema".into(),
            "https://json-schema.org/draft/2020-12/schema".into(),
        );
    }
    let validator = jsonschema::validator_for(&root).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{path}: {instance} is invalid: {errors:?}"
    );
}
