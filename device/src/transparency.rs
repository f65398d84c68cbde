//! The transparency log: every request the device sends, recorded before it is sent, so the
//! user can see everything that left the device and why.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::store::Store;

/// Why the device sent a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Downloading published diagnosis keys.
    Sync,
    /// Reporting a positive test with a health authority's code.
    Report,
    /// A decoy report that hides real ones from network observers.
    Chaff,
    /// Taking part in research.
    Research,
}

impl Purpose {
    /// The lower-case name shown to the user.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Report => "report",
            Self::Chaff => "chaff",
            Self::Research => "research",
        }
    }
}

/// One request the device sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When it was sent, Unix seconds.
    pub time: u64,
    /// The HTTP method.
    pub method: String,
    /// The host it went to, with the port when not the default.
    pub host: String,
    /// The path it asked for.
    pub route: String,
    /// The size of the request body, in bytes.
    pub bytes: u64,
    /// Why it was sent.
    pub purpose: Purpose,
}

impl Store {
    /// Every request the device has sent, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::CorruptRecord`].
    pub fn transparency_log(&self) -> Result<Vec<LogEntry>, Error> {
        self.log_entries()
    }

    /// Records a request about to be sent.
    pub(crate) fn log_request(&self, entry: &LogEntry) -> Result<(), Error> {
        self.append_log(entry)
    }
}
