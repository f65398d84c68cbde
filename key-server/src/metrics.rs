//! Prometheus metrics: request counts by route and status, and latency histograms by route.
//!
//! Labels are the route template and the status only, so a chaff request is counted exactly
//! like a real one, and nothing about a client appears.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    total: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
}

/// The server's metrics registry.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
}

impl Metrics {
    /// Records one answered request.
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        let mut inner = crate::locks::lock(&self.inner);
        *inner
            .requests
            .entry((route.to_owned(), status))
            .or_default() += 1;
        let histogram = inner.latency.entry(route.to_owned()).or_default();
        for (count, bound) in histogram.counts.iter_mut().zip(BUCKETS) {
            *count += u64::from(seconds <= bound);
        }
        histogram.total += 1;
        histogram.sum += seconds;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let inner = crate::locks::lock(&self.inner);
        let mut out = String::new();
        out.push_str("# HELP varsel_http_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE varsel_http_requests_total counter\n");
        for ((route, status), count) in &inner.requests {
            let _ = writeln!(
                out,
                "varsel_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP varsel_http_request_duration_seconds Time to answer, by route.\n");
        out.push_str("# TYPE varsel_http_request_duration_seconds histogram\n");
        for (route, histogram) in &inner.latency {
            let name = "varsel_http_request_duration_seconds";
            for (count, bound) in histogram.counts.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {count}"
                );
            }
            let total = histogram.total;
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {total}"
            );
            let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", histogram.sum);
            let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {total}");
        }
        out
    }
}

/// Middleware that times every request and records it under its route template.
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics.observe(&route, status, started.elapsed().as_secs_f64());
    tracing::debug!(route = %route, status, "answered");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_buckets() {
        let metrics = Metrics::default();
        metrics.observe("/api/verify", 200, 0.002);
        metrics.observe("/api/verify", 200, 0.2);
        let text = metrics.render();
        assert!(
            text.contains("varsel_http_requests_total{route=\"/api/verify\",status=\"200\"} 2")
        );
        assert!(text.contains("le=\"0.0025\"} 1"));
        assert!(text.contains("_count{route=\"/api/verify\"} 2"));
    }
}
