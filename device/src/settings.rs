//! What the user and the health authority configure, what the user agreed to, and the state of
//! uploads, each kept in the store.

use serde::{Deserialize, Serialize};
use varsel_protocol::export::{TrustedKey, TrustedKeys};
use varsel_protocol::risk::RiskConfig;

use crate::Error;
use crate::store::Store;

/// Name of the settings record.
const SETTINGS: &str = "settings";
/// Name of the consent record.
const CONSENT: &str = "consent";
/// Name of the upload-state record.
const UPLOAD: &str = "upload";

/// TX power the device advertises in its metadata when none is configured, in dBm.
///
/// The calibrated value GAEN published for the Samsung phones of the DP-3T trial (SM-A515F and
/// others, `../shared/data/ble/calibration-2020-09-18.csv`); the simulated radio is tuned to it.
pub const DEFAULT_TX_POWER: i8 = -24;

/// Chaff uploads per day when none is configured.
pub const DEFAULT_CHAFF_PER_DAY: f64 = 0.2;

/// The device's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Base URL of the key server (`https://…/`); exports are under `exports/`.
    pub server_url: Option<String>,
    /// Public keys whose export signatures the device trusts.
    pub trusted_keys: Vec<TrustedKeySetting>,
    /// The health authority's identifier sent with uploads.
    pub health_authority_id: String,
    /// The TX power this device advertises, in dBm.
    pub tx_power: i8,
    /// Mean number of chaff uploads per day (a Poisson process); 0 turns chaff off.
    pub chaff_per_day: f64,
    /// How exposures are scored; the health authority's choice.
    pub risk: RiskConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server_url: None,
            trusted_keys: Vec::new(),
            health_authority_id: "varsel".to_owned(),
            tx_power: DEFAULT_TX_POWER,
            chaff_per_day: DEFAULT_CHAFF_PER_DAY,
            risk: RiskConfig::default(),
        }
    }
}

/// One trusted export-signing key: its PEM, optionally pinned to the id and version it signs
/// as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedKeySetting {
    /// SubjectPublicKeyInfo PEM of a P-256 key.
    pub pem: String,
    /// The `verification_key_id` it must sign as.
    pub key_id: Option<String>,
    /// The `verification_key_version` it must sign as.
    pub key_version: Option<String>,
}

impl Settings {
    /// The configured keys as a protocol [`TrustedKeys`] set.
    ///
    /// # Errors
    ///
    /// [`Error::NotConfigured`] when there is none, [`Error::Protocol`] for a bad PEM.
    pub fn trusted_keys(&self) -> Result<TrustedKeys, Error> {
        if self.trusted_keys.is_empty() {
            return Err(Error::NotConfigured {
                what: "trusted export keys",
            });
        }
        self.trusted_keys
            .iter()
            .map(|setting| {
                Ok(TrustedKey {
                    key_id: setting.key_id.clone(),
                    key_version: setting.key_version.clone(),
                    ..TrustedKey::from_pem(&setting.pem)?
                })
            })
            .collect()
    }

    /// Checks values a user may type in.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSetting`].
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(url) = &self.server_url {
            crate::http::base_url(url)?;
        }
        if !(0.0..=24.0).contains(&self.chaff_per_day) {
            return Err(Error::InvalidSetting {
                name: "chaff_per_day",
                reason: "must be between 0 and 24".into(),
            });
        }
        self.risk
            .validate()
            .map_err(|error| Error::InvalidSetting {
                name: "risk",
                reason: error.to_string(),
            })?;
        let id = &self.health_authority_id;
        if id.is_empty() || id.len() > 128 {
            return Err(Error::InvalidSetting {
                name: "health_authority_id",
                reason: "must be 1-128 characters".into(),
            });
        }
        self.trusted_keys().map(drop).or_else(|error| match error {
            Error::NotConfigured { .. } => Ok(()),
            other => Err(other),
        })
    }
}

/// What the user agreed to. Without consent the device downloads exports and nothing else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Consent {
    /// Sending reports (own keys, with a health authority's code) and the chaff that hides them.
    pub upload: bool,
    /// Taking part in research.
    pub research: bool,
}

/// Where uploads stand.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UploadState {
    /// The server's revision token from the last report, needed to revise it.
    pub revision_token: Option<String>,
    /// When the last report was published, Unix seconds.
    pub last_report_at: Option<u64>,
    /// When the next chaff sequence is due, Unix seconds.
    pub next_chaff_at: Option<u64>,
    /// When retention last ran, Unix seconds.
    pub retention_ran_at: Option<u64>,
}

impl Store {
    /// The settings, or the defaults when none were saved.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::CorruptRecord`].
    pub fn settings(&self) -> Result<Settings, Error> {
        Ok(self.get_state(SETTINGS)?.unwrap_or_default())
    }

    /// Validates and saves the settings.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSetting`], [`Error::Protocol`] or [`Error::Database`].
    pub fn set_settings(&self, settings: &Settings) -> Result<(), Error> {
        settings.validate()?;
        self.put_state(SETTINGS, settings)
    }

    /// What the user agreed to; nothing until they say so.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::CorruptRecord`].
    pub fn consent(&self) -> Result<Consent, Error> {
        Ok(self.get_state(CONSENT)?.unwrap_or_default())
    }

    /// Saves what the user agreed to.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn set_consent(&self, consent: Consent) -> Result<(), Error> {
        self.put_state(CONSENT, &consent)
    }

    /// Where uploads stand.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::CorruptRecord`].
    pub fn upload_state(&self) -> Result<UploadState, Error> {
        Ok(self.get_state(UPLOAD)?.unwrap_or_default())
    }

    /// Saves where uploads stand.
    ///
    /// # Errors
    ///
    /// [`Error::Database`].
    pub fn set_upload_state(&self, state: &UploadState) -> Result<(), Error> {
        self.put_state(UPLOAD, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_until_saved_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.settings().unwrap(), Settings::default());
        assert_eq!(store.consent().unwrap(), Consent::default());

        let mut settings = Settings {
            server_url: Some("ftp://example.org/".into()),
            ..Settings::default()
        };
        assert!(store.set_settings(&settings).is_err());
        settings.server_url = Some("https://example.org/en".into());
        settings.trusted_keys.push(TrustedKeySetting {
            pem: "not a key".into(),
            key_id: None,
            key_version: None,
        });
        assert!(store.set_settings(&settings).is_err());
        settings.trusted_keys.clear();
        store.set_settings(&settings).unwrap();
        assert_eq!(store.settings().unwrap(), settings);
    }
}
