//! The device's one HTTP client. Every request goes through [`HttpClient`], which checks
//! consent, writes the request to the transparency log, and only then sends it.
//!
//! Redirects are not followed and no proxy is read from the environment, so a request reaches
//! exactly the host the log names. Answers are read up to a size limit.

use std::sync::{Arc, Once};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, Url};

use crate::Error;
use crate::clock::Clock;
use crate::store::Store;
use crate::transparency::{LogEntry, Purpose};

/// Header that marks a chaff request.
pub const CHAFF_HEADER: &str = "X-Chaff";

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A server's answer: status and body.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The body, at most the limit the caller gave.
    pub body: Vec<u8>,
}

/// The HTTP client every request of the device goes through.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    base: Url,
    store: Store,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// Parses a server base URL: `http` or `https`, with a host, and a path ending in `/` so that
/// routes resolve below it.
///
/// # Errors
///
/// [`Error::InvalidSetting`].
pub fn base_url(text: &str) -> Result<Url, Error> {
    let invalid = |reason: &str| Error::InvalidSetting {
        name: "server_url",
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid("must be an http or https URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(invalid("must not carry a query, fragment or user name"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Installs the TLS provider (ring) once per process.
fn install_tls_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only when another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl HttpClient {
    /// A client for the server at `base`, logging to `store`'s transparency log.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSetting`] for a bad URL, [`Error::Transport`] if TLS cannot be set up.
    pub fn new(base: &str, store: Store, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        let base = base_url(base)?;
        install_tls_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent("varsel-device")
            .build()
            .map_err(|e| Error::Transport {
                route: String::new(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            client,
            base,
            store,
            clock,
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// Sends a GET for `route` (relative to the base URL) and reads up to `limit` bytes.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn get(&self, purpose: Purpose, route: &str, limit: usize) -> Result<Answer, Error> {
        self.send(purpose, Method::GET, route, None, false, limit)
            .await
    }

    /// Sends a JSON POST for `route`, marked as chaff when `chaff`, and reads up to `limit`
    /// bytes of the answer.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn post_json(
        &self,
        purpose: Purpose,
        route: &str,
        body: Vec<u8>,
        chaff: bool,
        limit: usize,
    ) -> Result<Answer, Error> {
        self.send(purpose, Method::POST, route, Some(body), chaff, limit)
            .await
    }

    /// Checks consent, logs the request, sends it and reads the answer up to `limit` bytes.
    ///
    /// # Errors
    ///
    /// [`Error::NoConsent`] when the purpose needs consent the user did not give (nothing is
    /// sent or logged), [`Error::Transport`] when the request fails or the answer is longer
    /// than `limit`, [`Error::Database`] when the log cannot be written (nothing is sent).
    pub async fn send(
        &self,
        purpose: Purpose,
        method: Method,
        route: &str,
        body: Option<Vec<u8>>,
        chaff: bool,
        limit: usize,
    ) -> Result<Answer, Error> {
        self.check_consent(purpose)?;
        let url = self.resolve(route)?;
        self.store.log_request(&LogEntry {
            time: self.clock.now(),
            method: method.as_str().to_owned(),
            host: host_of(&url),
            route: url.path().to_owned(),
            bytes: body.as_ref().map_or(0, |body| body.len() as u64),
            purpose,
        })?;

        let mut request = self.client.request(method, url);
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        if chaff {
            request = request.header(CHAFF_HEADER, HeaderValue::from_static("1"));
        }
        let response = request.send().await.map_err(|e| transport(route, &e))?;
        read_limited(route, response, limit).await
    }

    fn check_consent(&self, purpose: Purpose) -> Result<(), Error> {
        let consent = self.store.consent()?;
        let (given, needed) = match purpose {
            Purpose::Sync => return Ok(()),
            Purpose::Report | Purpose::Chaff => (consent.upload, "upload"),
            Purpose::Research => (consent.research, "research"),
        };
        if given {
            Ok(())
        } else {
            Err(Error::NoConsent {
                purpose: purpose.name(),
                consent: needed,
            })
        }
    }

    /// Resolves a route below the base URL, refusing anything that would leave it.
    fn resolve(&self, route: &str) -> Result<Url, Error> {
        let url = self.base.join(route).map_err(|e| Error::Transport {
            route: route.to_owned(),
            reason: e.to_string(),
        })?;
        let same_origin = url.origin() == self.base.origin();
        if !same_origin || !url.path().starts_with(self.base.path()) || url.query().is_some() {
            return Err(Error::Transport {
                route: route.to_owned(),
                reason: "route leaves the configured server".into(),
            });
        }
        Ok(url)
    }
}

fn host_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

fn transport(route: &str, error: &reqwest::Error) -> Error {
    let reason = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        error.to_string()
    };
    Error::Transport {
        route: route.to_owned(),
        reason,
    }
}

/// Reads a response body chunk by chunk, stopping past `limit` bytes.
async fn read_limited(
    route: &str,
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Answer, Error> {
    let status = response.status().as_u16();
    let too_large = || Error::Transport {
        route: route.to_owned(),
        reason: format!("answer is larger than {limit} bytes"),
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(route, &e))? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_end_in_a_slash_and_stay_http() {
        assert_eq!(
            base_url("https://keys.example/en").unwrap().as_str(),
            "https://keys.example/en/"
        );
        assert!(base_url("file:///etc/passwd").is_err());
        assert!(base_url("https://user@keys.example/").is_err());
        assert!(base_url("https://keys.example/?a=b").is_err());
        assert!(base_url("not a url").is_err());
    }

    #[test]
    fn routes_cannot_leave_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::ManualClock::new(0));
        let client = HttpClient::new("https://keys.example/en/", store, clock).unwrap();
        assert!(client.resolve("exports/index.txt").is_ok());
        assert!(client.resolve("https://elsewhere.example/x").is_err());
        assert!(client.resolve("//elsewhere.example/x").is_err());
        assert!(client.resolve("../admin").is_err());
        assert!(client.resolve("/admin").is_err());
        assert!(client.resolve("x?code=1").is_err());
    }
}
