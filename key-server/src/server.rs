//! The server process: one router made of the verification routes, the operational routes
//! (`/healthz`, `/metrics`, `/openapi.json`) and, later, the key routes; served on a listener
//! until a shutdown future resolves, with periodic maintenance alongside.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::clients::TrustedProxies;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keyside::KeyService;
use crate::metrics::{self, Metrics};
use crate::openapi;
use crate::request::MAX_BODY_BYTES;
use crate::verification::Verification;

/// How often expired codes and tokens are deleted.
pub const SWEEP_EVERY: Duration = Duration::from_secs(300);

/// Everything `serve` runs.
#[derive(Clone, Debug)]
pub struct KeyServer {
    metrics: Metrics,
    verification: Option<Verification>,
    keys: Option<KeyService>,
    proxies: TrustedProxies,
}

impl KeyServer {
    /// Opens the databases and keys the configuration enables.
    ///
    /// # Errors
    ///
    /// Storage failures and configuration errors.
    pub fn open(config: &Config, clock: SharedClock) -> Result<Self> {
        let proxies = TrustedProxies::parse(&config.server.trusted_proxies)?;
        let verification = if config.verification.enabled {
            Some(Verification::open(config, clock.clone())?)
        } else {
            None
        };
        let keys = if config.publish.enabled {
            let verifier = verification
                .as_ref()
                .map(Verification::certificate_verifier);
            Some(KeyService::open(config, clock, verifier)?)
        } else {
            None
        };
        Ok(Self {
            metrics: Metrics::default(),
            verification,
            keys,
            proxies,
        })
    }

    /// A server around an already built verification service.
    pub fn with_verification(verification: Verification) -> Self {
        Self {
            metrics: Metrics::default(),
            verification: Some(verification),
            keys: None,
            proxies: TrustedProxies::default(),
        }
    }

    /// A server around already built verification and key services.
    pub fn with_services(verification: Verification, keys: KeyService) -> Self {
        Self {
            metrics: Metrics::default(),
            verification: Some(verification),
            keys: Some(keys),
            proxies: TrustedProxies::default(),
        }
    }

    /// The same server, reading client addresses through these reverse proxies.
    #[must_use]
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }

    /// The key side, when enabled.
    pub fn keys(&self) -> Option<&KeyService> {
        self.keys.as_ref()
    }

    /// The verification service, when enabled.
    pub fn verification(&self) -> Option<&Verification> {
        self.verification.as_ref()
    }

    /// All routes, measured, with the body limit and a JSON 404.
    pub fn router(&self) -> Router {
        let mut router = Router::new()
            .route("/healthz", get(healthz))
            .route("/openapi.json", get(openapi_document))
            .route("/metrics", get(render_metrics))
            .with_state(self.metrics.clone());
        if let Some(verification) = &self.verification {
            router = router.merge(verification.router());
        }
        if let Some(keys) = &self.keys {
            router = router.merge(keys.router());
        }
        router
            .fallback(not_found)
            .layer(Extension(self.proxies.clone()))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(axum::middleware::from_fn_with_state(
                self.metrics.clone(),
                metrics::track,
            ))
    }

    /// Serves on `listener` until `shutdown` resolves, sweeping expired records meanwhile.
    ///
    /// # Errors
    ///
    /// Socket failures.
    pub async fn run(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let sweeper = self.verification.clone().map(|verification| {
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(SWEEP_EVERY);
                loop {
                    ticks.tick().await;
                    // The sweep scans whole trees, so it runs off the async workers.
                    let sweeping = verification.clone();
                    match tokio::task::spawn_blocking(move || sweeping.sweep()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => tracing::error!(%error, "sweeping expired codes failed"),
                        Err(error) => tracing::error!(%error, "sweeping expired codes panicked"),
                    }
                }
            })
        });
        let exporter = self
            .keys
            .clone()
            .map(|keys| tokio::spawn(async move { keys.run_worker(std::future::pending()).await }));
        let outcome = serve(listener, self.router(), shutdown).await;
        if let Some(exporter) = exporter {
            exporter.abort();
        }
        if let Some(sweeper) = sweeper {
            sweeper.abort();
        }
        outcome
    }
}

/// Serves `router` on `listener` until `shutdown` resolves. Client addresses reach handlers
/// only as rate-limit input.
///
/// # Errors
///
/// Socket failures.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

async fn render_metrics(State(metrics): State<Metrics>) -> Response {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], metrics.render()).into_response()
}

async fn openapi_document() -> impl IntoResponse {
    axum::Json(openapi::document())
}

async fn not_found() -> Response {
    Error::NotFound.into_response()
}
