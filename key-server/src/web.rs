//! The staff pages: server-rendered HTML for health-authority staff to sign in with their
//! authority's name and API key, issue a code, read it with its expiry, and see the day's
//! issued and used counts. No script runs on the pages.
//!
//! Forms carry a CSRF token: before sign-in a double-submit cookie, after sign-in a token bound
//! to the session. The session cookie is `HttpOnly`, `SameSite=Strict`, limited to `/staff`,
//! and `Secure` when the server is configured as behind TLS. Sessions live in memory only and
//! are stored under the hash of their cookie.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rand_core::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::codes::{IssuedCodes, TestType};
use crate::date::Date;
use crate::error::Error;
use crate::verification::{IssueDetails, Verification};

/// Session cookie name.
pub const SESSION_COOKIE: &str = "varsel_staff";
/// Pre-sign-in CSRF cookie name.
pub const LOGIN_CSRF_COOKIE: &str = "varsel_login_csrf";
/// Most sessions held at once.
const MAX_SESSIONS: usize = 10_000;

/// A signed-in member of staff.
#[derive(Clone, Debug)]
struct Session {
    authority: String,
    csrf: String,
    expires: u64,
}

/// Signed-in staff sessions, in memory only, keyed by the SHA-256 of the cookie value.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    fn create(&self, authority: &str, now: u64, lifetime: u64) -> Option<String> {
        let cookie = random_token();
        let session = Session {
            authority: authority.to_owned(),
            csrf: random_token(),
            expires: now + lifetime,
        };
        let mut sessions = crate::locks::lock(&self.sessions);
        sessions.retain(|_, session| session.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            return None;
        }
        sessions.insert(digest(&cookie), session);
        Some(cookie)
    }

    fn get(&self, cookie: &str, now: u64) -> Option<Session> {
        let sessions = crate::locks::lock(&self.sessions);
        sessions
            .get(&digest(cookie))
            .filter(|session| session.expires > now)
            .cloned()
    }

    fn remove(&self, cookie: &str) {
        let mut sessions = crate::locks::lock(&self.sessions);
        sessions.remove(&digest(cookie));
    }
}

/// The staff routes.
pub fn router(service: Verification) -> Router {
    Router::new()
        .route("/staff", get(page))
        .route("/staff/login", post(login))
        .route("/staff/issue", post(issue))
        .route("/staff/logout", post(logout))
        .with_state(service)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginForm {
    name: String,
    api_key: String,
    csrf: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueForm {
    test_type: TestType,
    #[serde(default)]
    symptom_date: String,
    #[serde(default)]
    test_date: String,
    #[serde(default)]
    tz_offset: i32,
    csrf: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogoutForm {
    csrf: String,
}

/// `GET /staff`: the issuing page when signed in, the sign-in page otherwise.
async fn page(State(service): State<Verification>, headers: HeaderMap) -> Response {
    match current_session(&service, &headers) {
        Some((_, session)) => issue_page(&service, &session, None, None),
        None => login_page(&service, None),
    }
}

/// `POST /staff/login`.
async fn login(
    State(service): State<Verification>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return login_page(&service, Some("The form was incomplete."));
    };
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(&expected, &form.csrf) {
        return error_page(&Error::Csrf);
    }
    let authority = match service
        .authorities()
        .authenticate(Some(form.api_key.trim()))
    {
        Ok(authority) if authority.name == form.name.trim() => authority,
        Ok(_) | Err(Error::Unauthorized) => {
            return login_page(&service, Some("Unknown name or API key."));
        }
        Err(error) => return error_page(&error),
    };
    let lifetime = service.config().session_minutes * 60;
    let Some(session) = service
        .sessions()
        .create(&authority.name, service.now(), lifetime)
    else {
        return error_page(&Error::RateLimited);
    };
    let cookie = session_cookie(&service, &session, lifetime);
    let mut response = redirect("/staff");
    append_cookie(&mut response, &cookie);
    append_cookie(
        &mut response,
        &format!("{LOGIN_CSRF_COOKIE}=; Path=/staff; Max-Age=0"),
    );
    response
}

/// `POST /staff/issue`.
async fn issue(
    State(service): State<Verification>,
    headers: HeaderMap,
    form: Result<Form<IssueForm>, FormRejection>,
) -> Response {
    let Some((_, session)) = current_session(&service, &headers) else {
        return redirect("/staff");
    };
    let Ok(Form(form)) = form else {
        return issue_page(&service, &session, None, Some("The form was incomplete."));
    };
    if !same(&session.csrf, &form.csrf) {
        return error_page(&Error::Csrf);
    }
    let details = IssueDetails {
        test_type: form.test_type,
        symptom_date: Some(form.symptom_date),
        test_date: Some(form.test_date),
        tz_offset: form.tz_offset,
        uuid: None,
        padding: None,
    };
    let Ok(Some(authority)) = service.authorities().get(&session.authority) else {
        return redirect("/staff");
    };
    if authority.revoked.is_some() {
        return error_page(&Error::Unauthorized);
    }
    match service.issue_codes(&authority, &details).await {
        Ok(codes) => issue_page(&service, &session, Some(&codes), None),
        Err(error) if error.status().is_client_error() => {
            issue_page(&service, &session, None, Some(&error.to_string()))
        }
        Err(error) => error_page(&error),
    }
}

/// `POST /staff/logout`.
async fn logout(
    State(service): State<Verification>,
    headers: HeaderMap,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    match (current_session(&service, &headers), form) {
        (Some((cookie, session)), Ok(Form(form))) if same(&session.csrf, &form.csrf) => {
            service.sessions().remove(&cookie);
        }
        _ => {}
    }
    let mut response = redirect("/staff");
    append_cookie(
        &mut response,
        &format!("{SESSION_COOKIE}=; Path=/staff; Max-Age=0"),
    );
    response
}

fn current_session(service: &Verification, headers: &HeaderMap) -> Option<(String, Session)> {
    let value = cookie(headers, SESSION_COOKIE)?;
    let session = service.sessions().get(&value, service.now())?;
    Some((value, session))
}

fn login_page(service: &Verification, message: Option<&str>) -> Response {
    let csrf = random_token();
    let body = format!(
        r#"<h1>Sign in</h1>{}
<form method="post" action="/staff/login">
<label>Authority name <input id="name" name="name" autocomplete="username" required></label>
<label>API key <input id="api-key" name="api_key" type="password"
 autocomplete="current-password" required></label>
<input type="hidden" name="csrf" value="{csrf}">
<button id="sign-in" type="submit">Sign in</button>
</form>"#,
        notice(message),
    );
    let mut response = html(StatusCode::OK, "Sign in", &body);
    let secure = if service.behind_tls() { "; Secure" } else { "" };
    let cookie =
        format!("{LOGIN_CSRF_COOKIE}={csrf}; Path=/staff; HttpOnly; SameSite=Strict{secure}");
    append_cookie(&mut response, &cookie);
    response
}

fn issue_page(
    service: &Verification,
    session: &Session,
    codes: Option<&IssuedCodes>,
    message: Option<&str>,
) -> Response {
    let counts = service.counts(&session.authority).unwrap_or_default();
    let issued = codes.map_or_else(String::new, |codes| {
        format!(
            r#"<section id="issued"><h2>New code</h2>
<p>Short code: <output id="short-code">{}</output> valid until <span id="short-expiry">{}</span></p>
<p>Long code: <output id="long-code">{}</output> valid until <span id="long-expiry">{}</span></p>
</section>"#,
            escape(&codes.short_code),
            utc(codes.short_expires),
            escape(&codes.long_code),
            utc(codes.long_expires),
        )
    });
    let today = Date::from_unix_seconds(service.now(), 0);
    let body = format!(
        r#"<h1>{authority}</h1>{notice}{issued}
<p>Today: <span id="issued-count">{issued_count}</span> issued,
<span id="used-count">{used_count}</span> used.</p>
<form method="post" action="/staff/issue">
<label>Test type <select id="test-type" name="test_type">
<option value="confirmed">confirmed</option><option value="likely">likely</option>
<option value="negative">negative</option></select></label>
<label>Symptom date <input id="symptom-date" name="symptom_date" type="date" max="{today}"></label>
<label>Test date <input id="test-date" name="test_date" type="date" max="{today}"></label>
<label>UTC offset, minutes
<input id="tz-offset" name="tz_offset" type="number" value="0" min="-720" max="840"></label>
<input type="hidden" name="csrf" value="{csrf}">
<button id="issue" type="submit">Issue code</button>
</form>
<form method="post" action="/staff/logout"><input type="hidden" name="csrf" value="{csrf}">
<button id="sign-out" type="submit">Sign out</button></form>"#,
        authority = escape(&session.authority),
        notice = notice(message),
        issued_count = counts.issued,
        used_count = counts.used,
        csrf = escape(&session.csrf),
    );
    html(StatusCode::OK, "Issue a code", &body)
}

fn error_page(error: &Error) -> Response {
    let message = if error.status().is_server_error() {
        tracing::error!(%error, "staff page fault");
        "Something went wrong; try again.".to_owned()
    } else {
        error.to_string()
    };
    let body = format!(
        "<h1>Error</h1>{}<p><a href=\"/staff\">Back</a></p>",
        notice(Some(&message))
    );
    html(error.status(), "Error", &body)
}

fn notice(message: Option<&str>) -> String {
    message.map_or_else(String::new, |text| {
        format!("<p id=\"message\" role=\"alert\">{}</p>", escape(text))
    })
}

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title} - Varsel</title><style>\
         body{{font-family:sans-serif;max-width:40em;margin:2em auto}}\
         label{{display:block;margin:.5em 0}}\
         output{{font:bold 1.4em monospace}}</style></head><body>{body}</body></html>"
    );
    let mut response = (status, page).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn redirect(to: &'static str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn session_cookie(service: &Verification, value: &str, lifetime: u64) -> String {
    let secure = if service.behind_tls() { "; Secure" } else { "" };
    let flags = "HttpOnly; SameSite=Strict";
    format!("{SESSION_COOKIE}={value}; Path=/staff; Max-Age={lifetime}; {flags}{secure}")
}

fn append_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The value of cookie `name`, if the request sent it.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut bytes);
    B64URL.encode(bytes)
}

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

fn same(left: &str, right: &str) -> bool {
    left.len() == right.len() && bool::from(left.as_bytes().ct_eq(right.as_bytes()))
}

/// A Unix time as `YYYY-MM-DD HH:MM UTC`.
fn utc(seconds: u64) -> String {
    let minutes = (seconds % 86_400) / 60;
    let date = Date::from_unix_seconds(seconds, 0);
    format!("{date} {:02}:{:02} UTC", minutes / 60, minutes % 60)
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(utc(1_585_785_600 + 3_660), "2020-04-02 01:01 UTC");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; varsel_staff=abc; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }

    #[test]
    fn sessions_expire() {
        let sessions = Sessions::default();
        let cookie = sessions.create("Lab", 100, 60).unwrap();
        assert_eq!(sessions.get(&cookie, 159).unwrap().authority, "Lab");
        assert!(sessions.get(&cookie, 160).is_none());
        assert!(sessions.get("forged", 100).is_none());
    }
}
