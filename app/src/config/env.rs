//! Environment overrides: `APP_SECTION__KEY=value` sets `[section] key = value`.
//!
//! A double underscore separates nesting levels (keys themselves contain single
//! underscores), names are lower-cased. The value is read as a TOML value when it parses
//! as one (`8080`, `true`, `["a","b"]`), else as a plain string, so URLs need no quoting.

use super::ConfigError;

/// Variables with the prefix that are not configuration keys (the CLI reads them; the
/// allocator is chosen before any configuration is read).
const NOT_CONFIG: &[&str] = &["APP_CONFIG", "APP_LOG", "APP_LOG_FORMAT", crate::alloc::ENV];

/// Applies every `APP_*` variable of `env` to `doc`.
pub fn apply_env_overrides<I>(doc: &mut toml::Table, env: I) -> Result<(), ConfigError>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("APP_") && !NOT_CONFIG.contains(&k.as_str()))
        .collect();
    // Deterministic order, so a table override and a key inside it apply the same way each run.
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name["APP_".len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(
                name,
                "empty key segment in environment variable name",
            ));
        }
        set_path(doc, &path, parse_value(&raw))
            .map_err(|reason| ConfigError::invalid(name.clone(), reason))?;
    }
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    // Parse as the right-hand side of an assignment; anything that is not a TOML value
    // (a URL, an address) stays a string.
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(doc: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or_else(|| "empty key".to_string())?;
    let mut table = doc;
    for seg in parents {
        let entry = table
            .entry(seg.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("`{seg}` is not a table")),
        };
    }
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn nested_and_typed_values() {
        let mut doc = toml::Table::new();
        apply_env_overrides(
            &mut doc,
            vars(&[
                ("APP_LISTEN", "127.0.0.1:9000"),
                ("APP_DATABASE__URL", "postgres://u@h/db"),
                ("APP_CACHE__L1_TTL_MS", "250"),
                ("APP_CACHE__L1_ENABLED", "false"),
                (
                    "APP_REGISTRATION__CONTROL_PLANES",
                    r#"["http://a:1","http://b:2"]"#,
                ),
                ("APP_CONFIG", "/etc/app.toml"),
                ("APP_ALLOCATOR", "jemalloc"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(doc["listen"].as_str(), Some("127.0.0.1:9000"));
        assert_eq!(doc["database"]["url"].as_str(), Some("postgres://u@h/db"));
        assert_eq!(doc["cache"]["l1_ttl_ms"].as_integer(), Some(250));
        assert_eq!(doc["cache"]["l1_enabled"].as_bool(), Some(false));
        assert_eq!(
            doc["registration"]["control_planes"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        assert!(!doc.contains_key("config"));
    }

    #[test]
    fn scalar_in_the_way_is_an_error_naming_the_variable() {
        let mut doc: toml::Table = "listen = \"x\"".parse().unwrap();
        let err = apply_env_overrides(&mut doc, vars(&[("APP_LISTEN__PORT", "1")])).unwrap_err();
        assert!(err.to_string().contains("APP_LISTEN__PORT"), "{err}");
    }
}
