//! The app's configuration: one TOML file plus `APP_`-prefixed environment overrides.
//!
//! Every table and field has a default, so an empty file (or none) gives a working
//! single-node setup: SQLite in `app.db`, Redis on localhost, no control plane.
//! Validation errors name the field and the reason.

mod env;
mod types;

use std::path::Path;

pub use env::apply_env_overrides;
pub use types::*;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("config field `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Hides the password of a `scheme://user:password@host...` URL and of its query
/// parameters named `*password*` (logs, `check-config`).
pub fn redact_url(url: &str) -> String {
    if let Some((main, query)) = url.split_once('?') {
        let query: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.contains("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        return format!("{}?{}", redact_url(main), query.join("&"));
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Config {
    /// Reads `path` (if given), applies the environment overrides from `env`, validates.
    pub fn load<I>(path: Option<&Path>, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut doc = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax {
                        path: p.display().to_string(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        apply_env_overrides(&mut doc, env)?;
        Self::from_table(doc)
    }

    /// Parses a TOML text (no environment), for tests and tools.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let doc = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Syntax {
                path: "<string>".into(),
                message: e.to_string(),
            })?;
        Self::from_table(doc)
    }

    fn from_table(doc: toml::Table) -> Result<Self, ConfigError> {
        let cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
                let field = e.path().to_string();
                ConfigError::invalid(
                    if field == "." { "<root>".into() } else { field },
                    e.into_inner().to_string(),
                )
            })?;
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://app.db"), "sqlite://app.db");
        assert_eq!(
            redact_url("redis+cluster://:pw@a:1,b:2"),
            "redis+cluster://:***@a:1,b:2"
        );
        assert_eq!(
            redact_url("redis+sentinel://:pw@a/m?sentinel_username=s&sentinel_password=x"),
            "redis+sentinel://:***@a/m?sentinel_username=s&sentinel_password=***"
        );
    }
}
