//! Varsel's key server: health authorities issue one-time upload codes, devices exchange them
//! for a signed certificate bound to their keys, and (on the key side) upload those keys for
//! publication. The normative description of the verification routes is
//! `spec/verification.md`.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration with environment overrides.
//! - [`server`]: the process: routers merged, metrics, health, maintenance, `serve`.
//! - [`verification`]: `POST /api/issue`, `/api/verify`, `/api/certificate` and the JWKS.
//! - [`web`]: the health-authority staff pages.
//! - [`certificate`]: token and certificate claims, and [`certificate::verify_certificate`].
//! - [`codes`], [`authority`]: upload codes and authority accounts in sled.
//! - [`signing`], [`jwt`]: ES256 signing keys and compact JWS.
//! - [`ratelimit`], [`padding`]: guessing limits, response padding and chaff.
//! - [`clock`]: the time source every component takes.
//! - [`cli`]: the operator's commands.
//! - [`Error`]: the one error type, mapped to responses in one place.
//!
//! # Limitations
//!
//! - sled allows one process per database, so `authority` and `keys` commands run while the
//!   server is stopped; a rotated key is used after the next start.
//! - Behind a reverse proxy not listed in `server.trusted_proxies`, every client shares the
//!   proxy's rate-limit bucket; only `X-Forwarded-For` is read, not `Forwarded`.

pub mod authority;
pub mod certificate;
pub mod cli;
pub mod clients;
pub mod clock;
pub mod codes;
pub mod config;
pub mod date;
pub mod durability;
mod error;
pub mod exports;
pub mod hashing;
pub mod jwt;
pub mod keyside;
mod locks;
pub mod metrics;
pub mod openapi;
pub mod padding;
pub mod publish;
pub mod published;
pub mod ratelimit;
pub mod request;
pub mod revision;
pub mod server;
pub mod signing;
pub mod store;
pub mod verification;
pub mod web;
pub mod worker;

pub use error::{Error, Result, TokenRejection};
