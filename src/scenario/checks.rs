//! What must hold at the end of the story: the near contact is alerted and the far one is not,
//! and the design's promises about what leaves a phone held on the way: every request a phone
//! sent is in its transparency log, phones without upload consent sent nothing but sync
//! downloads, and no identifier a phone heard appears in any request.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use varsel_device::transparency::{LogEntry, Purpose};
use varsel_protocol::keys::DiagnosisKey;

use super::{Received, Role, Sender, World};
use crate::Error;

/// The forms a 16-byte identifier could take inside a request: the raw bytes, hex in either
/// case, and base64 in both alphabets (unpadded, so padded forms match as well).
pub fn identifier_forms(bytes: &[u8; 16]) -> Vec<Vec<u8>> {
    vec![
        bytes.to_vec(),
        hex::encode(bytes).into_bytes(),
        hex::encode_upper(bytes).into_bytes(),
        STANDARD_NO_PAD.encode(bytes).into_bytes(),
        URL_SAFE_NO_PAD.encode(bytes).into_bytes(),
    ]
}

/// Whether `data` holds any of `forms` (as from [`identifier_forms`]) anywhere in it.
pub fn carries(data: &[u8], forms: &[Vec<u8>]) -> bool {
    forms.iter().any(|form| {
        data.windows(form.len())
            .any(|window| window == form.as_slice())
    })
}

/// Checks that a phone's transparency log lists exactly the requests the server received
/// from it, one for one and in order: method, route, body size, host, and chaff for chaff.
///
/// # Errors
///
/// The first difference, in words.
pub fn log_matches(log: &[LogEntry], received: &[&Received], host: &str) -> Result<(), String> {
    if log.len() != received.len() {
        return Err(format!(
            "the log lists {} requests, the server received {}",
            log.len(),
            received.len()
        ));
    }
    for (index, (entry, request)) in log.iter().zip(received).enumerate() {
        let same = entry.method == request.method
            && entry.route == request.path
            && entry.bytes == request.bytes()
            && entry.host == host
            && (entry.purpose == Purpose::Chaff) == request.chaff;
        if !same {
            return Err(format!(
                "request {index}: the log says {} {}{} ({} bytes), the server received {} {} \
                 ({} bytes)",
                entry.method,
                entry.host,
                entry.route,
                entry.bytes,
                request.method,
                request.path,
                request.bytes()
            ));
        }
    }
    Ok(())
}

/// Checks that a phone sent nothing but sync downloads: GETs below `/exports/`, logged as
/// sync, with no body.
///
/// # Errors
///
/// The first other request, in words.
pub fn only_sync_downloads(log: &[LogEntry], received: &[&Received]) -> Result<(), String> {
    if let Some(entry) = log.iter().find(|entry| entry.purpose != Purpose::Sync) {
        return Err(format!("logged a {} request", entry.purpose.name()));
    }
    let download = |request: &&Received| {
        request.method == "GET" && request.path.starts_with("/exports/") && request.body.is_empty()
    };
    match received.iter().find(|request| !download(request)) {
        Some(request) => Err(format!("sent {} {}", request.method, request.path)),
        None => Ok(()),
    }
}

impl World {
    /// Everything that did not turn out as the story and the promises say, in words; empty
    /// when all is well.
    ///
    /// # Errors
    ///
    /// The phones' and the server's storage errors, which leave the story unchecked.
    pub fn problems(&self) -> Result<Vec<String>, Error> {
        let mut problems = self.story_problems()?;
        problems.extend(self.traffic_problems()?);
        Ok(problems)
    }

    /// The story's turns: a report, a publication, one alert and one all-clear.
    fn story_problems(&self) -> Result<Vec<String>, Error> {
        let mut problems = Vec::new();
        let inserted = self.report_outcome().and_then(|outcome| outcome.inserted);
        if inserted.unwrap_or(0) == 0 {
            problems.push("the server stored none of Alice's keys".to_owned());
        }
        if !self.reporters_key_published()? {
            problems.push("Alice's key of the meeting day is in no published file".to_owned());
        }
        let alerted =
            |role| -> Result<bool, Error> { Ok(self.exposures(role)?.iter().any(|day| day.alert)) };
        if !alerted(Role::NearContact)? {
            problems.push("Bob, 1 m from Alice for 20 minutes, got no alert".to_owned());
        }
        if alerted(Role::FarContact)? {
            let distance = self.options().far_contact.distance_m;
            problems.push(format!("Carol, {distance} m from Alice, got an alert"));
        }
        Ok(problems)
    }

    /// Alice's key of the meeting day, as it is published; `None` when her phone has none.
    ///
    /// # Errors
    ///
    /// The phone's store errors.
    pub fn meeting_day_key(&self) -> Result<Option<DiagnosisKey>, Error> {
        let meeting = self.options().timeline.meeting;
        let keys = self.device(Role::Reporter).store().keys()?;
        Ok(keys
            .into_iter()
            .find(|key| {
                let start = key.window.start().unix_seconds();
                start <= meeting && meeting < key.end_unix_seconds()
            })
            .map(|key| key.tek.into_diagnosis_key()))
    }

    /// Whether a live export holds Alice's key of the meeting day.
    fn reporters_key_published(&self) -> Result<bool, Error> {
        let Some(published) = self.meeting_day_key()? else {
            return Ok(false);
        };
        let archives = self.server().published()?;
        Ok(archives
            .iter()
            .flat_map(|(_, archive)| &archive.export.keys)
            .any(|exported| exported.key == published))
    }

    /// The promises about what left the phones.
    fn traffic_problems(&self) -> Result<Vec<String>, Error> {
        let mut problems = Vec::new();
        let unexpected = self.received_from(Sender::Unexpected);
        if !unexpected.is_empty() {
            problems.push(format!(
                "the server received {} requests while no one should have sent any",
                unexpected.len()
            ));
        }
        let host = self.server().address().to_string();
        for person in self.people() {
            let log = self.log(person.role)?;
            let received = self.received_from(Sender::Phone(person.role));
            if let Err(difference) = log_matches(&log, &received, &host) {
                problems.push(format!("{}'s phone: {difference}", person.name));
            }
            let consented = person.role == Role::Reporter;
            if let (false, Err(other)) = (consented, only_sync_downloads(&log, &received)) {
                problems.push(format!("{}'s phone, without consent, {other}", person.name));
            }
        }
        problems.extend(self.identifier_leaks()?);
        Ok(problems)
    }

    /// Every request the server received that carries an identifier some phone heard, in
    /// any of the [`identifier_forms`], in its request line, headers or body.
    ///
    /// # Errors
    ///
    /// The phones' store errors.
    pub fn identifier_leaks(&self) -> Result<Vec<String>, Error> {
        let mut forms = Vec::new();
        for role in Role::ALL {
            for sighting in self.sightings(role)? {
                forms.extend(identifier_forms(sighting.rpi.as_bytes()));
            }
        }
        let mut leaks = Vec::new();
        for (sender, request) in self.traffic() {
            if carries(request.head.as_bytes(), &forms) || carries(&request.body, &forms) {
                leaks.push(format!(
                    "{} {} from {sender:?} carries a heard identifier",
                    request.method, request.path
                ));
            }
        }
        Ok(leaks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(method: &str, path: &str, body: &[u8]) -> Received {
        Received {
            method: method.to_owned(),
            path: path.to_owned(),
            head: format!("{method} {path}\n"),
            body: body.to_vec(),
            chaff: false,
        }
    }

    fn entry(method: &str, route: &str, bytes: u64, purpose: Purpose) -> LogEntry {
        LogEntry {
            time: 0,
            method: method.to_owned(),
            host: "127.0.0.1:9".to_owned(),
            route: route.to_owned(),
            bytes,
            purpose,
        }
    }

    #[test]
    fn a_log_matches_only_what_was_received() {
        let sync = received("GET", "/exports/index.txt", b"");
        let publish = received("POST", "/v1/publish", b"{}");
        let log = [
            entry("GET", "/exports/index.txt", 0, Purpose::Sync),
            entry("POST", "/v1/publish", 2, Purpose::Report),
        ];
        assert!(log_matches(&log, &[&sync, &publish], "127.0.0.1:9").is_ok());
        assert!(log_matches(&log[..1], &[&sync, &publish], "127.0.0.1:9").is_err());
        assert!(log_matches(&log, &[&sync, &publish], "127.0.0.1:10").is_err());
        let bigger = received("POST", "/v1/publish", b"{ }");
        assert!(log_matches(&log, &[&sync, &bigger], "127.0.0.1:9").is_err());

        assert!(only_sync_downloads(&log[..1], &[&sync]).is_ok());
        assert!(only_sync_downloads(&log, &[&sync]).is_err());
        assert!(only_sync_downloads(&log[..1], &[&sync, &publish]).is_err());
    }

    #[test]
    fn identifier_forms_cover_hex_and_base64() {
        let bytes = [0xfb; 16];
        let forms = identifier_forms(&bytes);
        assert!(forms.contains(&b"fbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfb".to_vec()));
        assert!(forms.contains(&STANDARD_NO_PAD.encode(bytes).into_bytes()));
        assert!(forms.contains(&URL_SAFE_NO_PAD.encode(bytes).into_bytes()));
        assert!(forms.iter().all(|form| form.len() >= 16));
    }

    #[test]
    fn carries_finds_a_form_anywhere() {
        let forms = identifier_forms(&[0xfb; 16]);
        let hex = b"fbfbfbfbfbfbfbfbfbfbfbfbfbfbfbfb";
        assert!(carries(&[b"key=".as_slice(), hex, b"&x"].concat(), &forms));
        assert!(!carries(&hex[1..], &forms));
        assert!(!carries(b"", &forms));
    }
}
