//! Configuration: a TOML file with one section per part of the server, every field optional,
//! and environment overrides of the form `VARSEL_KEY_SERVER__SECTION__FIELD=value` (a nested
//! table adds another `__NAME`). An override's value is read as TOML when it parses as TOML
//! (`60`, `true`, `["a"]`) and as a string otherwise.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "VARSEL_KEY_SERVER__";

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listening address, storage and TLS facts shared by every router.
    pub server: ServerConfig,
    /// Upload codes, verification tokens and certificates.
    pub verification: VerificationConfig,
    /// The publish route.
    pub publish: crate::keyside::PublishConfig,
    /// Export files and their worker.
    pub exports: crate::keyside::ExportConfig,
}

/// Settings shared by every router.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where `serve` listens.
    pub listen: SocketAddr,
    /// The directory holding one sled database per side (`verification/`, ...).
    pub data_dir: PathBuf,
    /// Whether clients reach the server over TLS (a terminating proxy counts); sets `Secure`
    /// on the staff session cookie.
    pub behind_tls: bool,
    /// Reverse proxies (addresses or networks, `10.0.0.0/8`) whose `X-Forwarded-For`
    /// entries name the client for rate limits; none by default.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("varsel-key-server-data"),
            behind_tls: false,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Settings of the verification routes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VerificationConfig {
    /// Whether `serve` mounts the verification routes.
    pub enabled: bool,
    /// The `iss` of tokens and certificates.
    pub issuer: String,
    /// The `aud` of verification tokens (only this server reads them).
    pub token_audience: String,
    /// The `aud` of certificates: the key server that accepts uploads.
    pub certificate_audience: String,
    /// Codes each authority may issue per UTC day, unless its account says otherwise.
    pub daily_quota: u64,
    /// Lifetime of a short code, in minutes.
    pub short_code_minutes: u64,
    /// Lifetime of a long code, in hours.
    pub long_code_hours: u64,
    /// Lifetime of a verification token, in hours.
    pub token_hours: u64,
    /// Lifetime of a certificate, in minutes.
    pub certificate_minutes: u64,
    /// Clock skew tolerated when checking time claims, in seconds.
    pub allowed_skew_seconds: u64,
    /// Limits on guessing codes.
    pub rate_limit: RateLimitConfig,
    /// Lifetime of a staff web session, in minutes.
    pub session_minutes: u64,
}

impl Default for VerificationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            issuer: "varsel-verification".to_owned(),
            token_audience: "varsel-verification".to_owned(),
            certificate_audience: "varsel-key-server".to_owned(),
            daily_quota: 1_000,
            short_code_minutes: 15,
            long_code_hours: 24,
            token_hours: 24,
            certificate_minutes: 15,
            allowed_skew_seconds: 60,
            rate_limit: RateLimitConfig::default(),
            session_minutes: 60,
        }
    }
}

/// Limits on `POST /api/verify` (`spec/verification.md`, "Guessing codes").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Verification attempts one client may make per hour (a bucket refilled evenly).
    pub client_attempts_per_hour: u32,
    /// Attempts one client may make at once, from a full bucket.
    pub client_burst: u32,
    /// Failed attempts across all clients per minute, after which every attempt is refused
    /// until the minute ends.
    pub global_failures_per_minute: u32,
    /// Clients tracked at once; beyond it, unknown clients are refused until entries expire.
    pub max_tracked_clients: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            client_attempts_per_hour: 12,
            client_burst: 6,
            global_failures_per_minute: 60,
            max_tracked_clients: 100_000,
        }
    }
}

impl Config {
    /// Reads `path` (or the defaults without one) and applies the process's environment.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for unreadable files, bad TOML, unknown fields or bad overrides.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|error| Error::Config(format!("{}: {error}", path.display())))?,
            None => String::new(),
        };
        Self::from_toml_with_env(&text, std::env::vars())
    }

    /// Parses `text` and applies the overrides among `vars`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for bad TOML, unknown fields or bad overrides.
    pub fn from_toml_with_env(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|error| Error::Config(error.to_string()))?;
        for (name, value) in vars {
            if let Some(path) = name.strip_prefix(ENV_PREFIX) {
                apply_override(&mut table, path, &value)?;
            }
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|error: toml::de::Error| Error::Config(error.to_string()))
    }

    /// The directory of the verification side's database.
    pub fn verification_dir(&self) -> PathBuf {
        self.server.data_dir.join("verification")
    }

    /// The directory of the key side's database.
    pub fn keys_dir(&self) -> PathBuf {
        self.server.data_dir.join("keys")
    }
}

/// Sets `SECTION__FIELD` (any depth) in `table` to `value`.
fn apply_override(table: &mut toml::Table, path: &str, value: &str) -> Result<()> {
    let names: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    let Some((field, sections)) = names.split_last() else {
        return Err(Error::Config(format!("empty override {ENV_PREFIX}{path}")));
    };
    let mut current = table;
    for section in sections {
        let entry = current
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .ok_or_else(|| Error::Config(format!("override {path}: {section} is not a table")))?;
    }
    current.insert(field.clone(), parse_value(value));
    Ok(())
}

/// A TOML value when `text` is one, a string otherwise.
fn parse_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_file_and_env_layer() {
        let text = "[verification]\ndaily_quota = 5\nissuer = \"from-file\"\n";
        let vars = env(&[
            ("VARSEL_KEY_SERVER__VERIFICATION__ISSUER", "from-env"),
            (
                "VARSEL_KEY_SERVER__VERIFICATION__RATE_LIMIT__CLIENT_BURST",
                "2",
            ),
            ("VARSEL_KEY_SERVER__SERVER__LISTEN", "127.0.0.1:9999"),
            (
                "VARSEL_KEY_SERVER__SERVER__TRUSTED_PROXIES",
                r#"["10.0.0.0/8", "192.0.2.1"]"#,
            ),
            ("UNRELATED", "x"),
        ]);
        let config = Config::from_toml_with_env(text, vars).unwrap();
        assert_eq!(config.verification.daily_quota, 5);
        assert_eq!(config.verification.issuer, "from-env");
        assert_eq!(config.verification.rate_limit.client_burst, 2);
        assert_eq!(config.server.listen.port(), 9999);
        assert_eq!(config.server.trusted_proxies, ["10.0.0.0/8", "192.0.2.1"]);
        assert_eq!(config.verification.short_code_minutes, 15);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(Config::from_toml_with_env("[verification]\nbogus = 1\n", env(&[])).is_err());
        assert!(Config::from_toml_with_env("[nope]\n", env(&[])).is_err());
        let bad = env(&[("VARSEL_KEY_SERVER__VERIFICATION__DAILY_QUOTA", "many")]);
        assert!(Config::from_toml_with_env("", bad).is_err());
    }
}
