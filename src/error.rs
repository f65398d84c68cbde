//! The one error type of the `varsel` library.

/// What can go wrong while running a scenario.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key server failed (storage, configuration, sockets).
    #[error("key server: {0}")]
    KeyServer(#[from] varsel_key_server::Error),
    /// A simulated phone failed (its store, its radio, its HTTP flows).
    #[error("phone: {0}")]
    Device(#[from] varsel_device::Error),
    /// An export file could not be read or verified.
    #[error("export file: {0}")]
    Protocol(#[from] varsel_protocol::Error),
    /// A temporary directory or socket could not be set up.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The health authority's request to the key server did not go through.
    #[error("authority request to {route}: {reason}")]
    Http {
        /// The route asked for.
        route: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The scenario was driven out of order, such as moving its clock backwards.
    #[error("scenario: {0}")]
    Scenario(String),
}
