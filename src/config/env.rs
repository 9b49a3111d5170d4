//! `CALLRELAY__SECTION__KEY=value` environment overrides, applied on top of the TOML file.
//!
//! Path segments are separated by `__` and lower-cased; a numeric segment indexes an array
//! (`CALLRELAY__ACCOUNTS__0__AUTH_TOKEN`). Values stay strings, except those that start with
//! `[` or `{`, which are read as TOML inline arrays and tables. Numbers and booleans are
//! accepted as strings by the configuration structs (see `raw::lenient`), so an auth token
//! that happens to be all digits is not turned into an integer.

use toml::{Table, Value};

use super::ConfigError;

pub const PREFIX: &str = "CALLRELAY__";

/// Applies every `CALLRELAY__…` variable in `vars` to `root`.
pub fn apply(
    root: &mut Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(PREFIX) && k.len() > PREFIX.len())
        .collect();
    // Sorted so that array elements are created in index order, comparing numeric segments as
    // numbers (…__2__ before …__10__).
    vars.sort_by_cached_key(|(name, _)| {
        name.split("__")
            .map(|seg| match seg.parse::<u64>() {
                Ok(n) => (0, n, String::new()),
                Err(_) => (1, 0, seg.to_owned()),
            })
            .collect::<Vec<_>>()
    });
    for (name, raw) in vars {
        let path: Vec<String> = name[PREFIX.len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::env(&name, "empty path segment"));
        }
        let value = parse_value(&name, &raw)?;
        set(root, &path, value).map_err(|why| ConfigError::env(&name, &why))?;
    }
    Ok(())
}

fn parse_value(name: &str, raw: &str) -> Result<Value, ConfigError> {
    let trimmed = raw.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        // The error names the variable but not the value: it may be a secret.
        let doc: Table = toml::from_str(&format!("v = {raw}")).map_err(|_| {
            ConfigError::env(
                name,
                "starts with `[` or `{` but is not a TOML inline array or table",
            )
        })?;
        Ok(doc
            .get("v")
            .cloned()
            .unwrap_or(Value::String(String::new())))
    } else {
        Ok(Value::String(raw.to_owned()))
    }
}

fn set(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (head, rest) = path.split_first().expect("path is never empty");
    if rest.is_empty() {
        table.insert(head.clone(), value);
        return Ok(());
    }
    let child = table
        .entry(head.clone())
        .or_insert_with(|| empty_container(&rest[0]));
    set_in(child, rest, value)
}

fn set_in(node: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    match node {
        Value::Table(t) => set(t, path, value),
        Value::Array(items) => {
            let (head, rest) = path.split_first().expect("path is never empty");
            let index: usize = head
                .parse()
                .map_err(|_| format!("`{head}` is not an array index"))?;
            if index > items.len() {
                return Err(format!(
                    "index {index} skips elements (the array has {})",
                    items.len()
                ));
            }
            if index == items.len() {
                items.push(if rest.is_empty() {
                    Value::Boolean(false)
                } else {
                    empty_container(&rest[0])
                });
            }
            if rest.is_empty() {
                items[index] = value;
                Ok(())
            } else {
                set_in(&mut items[index], rest, value)
            }
        }
        _ => Err("a path segment names a value that is not a table or an array".into()),
    }
}

fn empty_container(next_segment: &str) -> Value {
    if next_segment.parse::<usize>().is_ok() {
        Value::Array(Vec::new())
    } else {
        Value::Table(Table::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn overrides_nested_keys_and_keeps_strings() {
        let mut root: Table = toml::from_str("[server]\nlisten = \"0.0.0.0:1\"").unwrap();
        apply(
            &mut root,
            vars(&[
                ("CALLRELAY__SERVER__LISTEN", "127.0.0.1:8080"),
                ("CALLRELAY__SERVER__WEBHOOK_DEADLINE_MS", "2500"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(root["server"]["listen"].as_str(), Some("127.0.0.1:8080"));
        assert_eq!(root["server"]["webhook_deadline_ms"].as_str(), Some("2500"));
        assert!(!root.contains_key("unrelated"));
    }

    #[test]
    fn creates_array_elements_in_order() {
        let mut root = Table::new();
        apply(
            &mut root,
            vars(&[
                ("CALLRELAY__ACCOUNTS__1__SID", "AC2"),
                ("CALLRELAY__ACCOUNTS__0__SID", "AC1"),
                ("CALLRELAY__ACCOUNTS__0__AUTH_TOKEN", "12345"),
            ]),
        )
        .unwrap();
        let accounts = root["accounts"].as_array().unwrap();
        assert_eq!(accounts[0]["sid"].as_str(), Some("AC1"));
        assert_eq!(accounts[0]["auth_token"].as_str(), Some("12345"));
        assert_eq!(accounts[1]["sid"].as_str(), Some("AC2"));
    }

    #[test]
    fn inline_arrays_are_parsed() {
        let mut root = Table::new();
        apply(
            &mut root,
            vars(&[("CALLRELAY__ADMIN__API_KEYS", r#"["a", "b"]"#)]),
        )
        .unwrap();
        assert_eq!(root["admin"]["api_keys"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn more_than_ten_elements_are_created_in_numeric_order() {
        let mut root = Table::new();
        let list: Vec<(String, String)> = (0..12)
            .map(|i| (format!("CALLRELAY__ACCOUNTS__{i}__SID"), format!("AC{i}")))
            .collect();
        apply(&mut root, list).unwrap();
        let accounts = root["accounts"].as_array().unwrap();
        assert_eq!(accounts.len(), 12);
        assert_eq!(accounts[10]["sid"].as_str(), Some("AC10"));
    }

    #[test]
    fn a_malformed_inline_value_is_not_echoed() {
        let mut root = Table::new();
        let err = apply(
            &mut root,
            vars(&[("CALLRELAY__ACCOUNTS__0__AUTH_TOKEN", "{s3cret-value")]),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn rejects_skipped_indices_and_names_the_variable() {
        let mut root = Table::new();
        let err = apply(&mut root, vars(&[("CALLRELAY__ACCOUNTS__3__SID", "x")])).unwrap_err();
        assert!(
            err.to_string().contains("CALLRELAY__ACCOUNTS__3__SID"),
            "{err}"
        );
    }
}
