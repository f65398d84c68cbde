//! Response padding: every JSON answer is filled with random characters to a random total size,
//! so the size of a response says nothing about what it holds, and a chaff answer has the same
//! size distribution as a real one (`spec/verification.md`, "Padding and chaff").

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::Value;

/// Every padded body is at least this long, in bytes.
pub const MIN_BODY_LEN: usize = 1_024;
/// A body is this many bytes longer than [`MIN_BODY_LEN`] at most (or than its content).
pub const SPREAD: usize = 512;
/// The request header that marks a chaff request.
pub const CHAFF_HEADER: &str = "x-chaff";

/// Serializes `body` with a `padding` field so its length is uniform in
/// `[max(MIN_BODY_LEN, content), that + SPREAD)`.
pub fn padded_json(status: StatusCode, mut body: Value) -> Response {
    let Some(object) = body.as_object_mut() else {
        return (status, Json(body)).into_response();
    };
    object.insert("padding".to_owned(), Value::String(String::new()));
    let unpadded = serde_json::to_string(object).map_or(0, |text| text.len());
    let mut rng = rand::thread_rng();
    let target = unpadded.max(MIN_BODY_LEN) + rng.gen_range(0..SPREAD);
    object.insert(
        "padding".to_owned(),
        Value::String(random_text(&mut rng, target - unpadded)),
    );
    (status, Json(body)).into_response()
}

/// `len` random characters from the base64url alphabet.
pub fn random_text(rng: &mut impl Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..len)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// How many recent real durations are kept per route.
const TIMING_SAMPLES: usize = 128;

/// Recent durations of real, successful requests per route, so a chaff answer can take as long
/// as a real one: it waits until a duration drawn from the real ones has passed.
#[derive(Debug, Default)]
pub struct TimingMirror {
    samples: std::sync::Mutex<HashMap<&'static str, VecDeque<Duration>>>,
}

impl TimingMirror {
    /// Records that a real request on `route` took `took`.
    pub fn record(&self, route: &'static str, took: Duration) {
        let mut samples = crate::locks::lock(&self.samples);
        let recent = samples.entry(route).or_default();
        if recent.len() == TIMING_SAMPLES {
            recent.pop_front();
        }
        recent.push_back(took);
    }

    /// A duration drawn uniformly from the recent real ones on `route`, if any.
    pub fn sample(&self, route: &'static str) -> Option<Duration> {
        let samples = crate::locks::lock(&self.samples);
        let recent = samples.get(route).filter(|recent| !recent.is_empty())?;
        recent
            .get(rand::thread_rng().gen_range(0..recent.len()))
            .copied()
    }

    /// Waits until a chaff request that started at `started` has taken as long as a sampled
    /// real one.
    pub async fn imitate(&self, route: &'static str, started: Instant) {
        if let Some(target) = self.sample(route) {
            tokio::time::sleep(target.saturating_sub(started.elapsed())).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    #[test]
    fn timing_mirror_samples_recent_real_durations() {
        let mirror = TimingMirror::default();
        assert_eq!(mirror.sample("/a"), None);
        for millis in 0..200 {
            mirror.record("/a", Duration::from_millis(millis));
        }
        for _ in 0..100 {
            let sample = mirror.sample("/a").unwrap();
            assert!((Duration::from_millis(72)..Duration::from_millis(200)).contains(&sample));
        }
        assert_eq!(mirror.sample("/b"), None);
    }

    #[tokio::test]
    async fn bodies_are_padded_into_the_window() {
        for _ in 0..50 {
            let response = padded_json(StatusCode::OK, serde_json::json!({ "a": "b" }));
            let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
            assert!((MIN_BODY_LEN..MIN_BODY_LEN + SPREAD).contains(&body.len()));
            let value: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value["a"], "b");
        }
    }
}
