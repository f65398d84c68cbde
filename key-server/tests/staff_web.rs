//! The staff pages over a real socket, as a plain HTTP client sees them: cookies, CSRF, issuing.

mod common;

use common::{Reply, TestServer};
use serde_json::json;
use varsel_key_server::config::Config;

/// The value of the hidden `csrf` field in a page.
fn csrf_field(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[start..].split('"').next().unwrap().to_owned()
}

/// The `name=value` part of the Set-Cookie header for `name`, and the whole header.
fn set_cookie(reply: &Reply, name: &str) -> (String, String) {
    let header = reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .find(|value| value.starts_with(&format!("{name}=")))
        .expect("the cookie");
    (header.split(';').next().unwrap().to_owned(), header)
}

fn between<'a>(page: &'a str, open: &str, close: &str) -> &'a str {
    let start = page.find(open).expect(open) + open.len();
    &page[start..start + page[start..].find(close).unwrap()]
}

async fn sign_in(server: &TestServer, api_key: &str) -> (String, String) {
    let page = server.get("/staff").await;
    let (login_cookie, _) = set_cookie(&page, "varsel_login_csrf");
    let form = format!(
        "name=Lab&api_key={api_key}&csrf={}",
        csrf_field(&page.text())
    );
    let form_type = ("content-type", "application/x-www-form-urlencoded");
    let signed_in = server
        .send(
            "POST",
            "/staff/login",
            &[form_type, ("cookie", &login_cookie)],
            form,
        )
        .await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.text());
    let (session, header) = set_cookie(&signed_in, "varsel_staff");
    let page = server
        .send("GET", "/staff", &[("cookie", &session)], "")
        .await
        .text();
    (session, header + "\n" + &page)
}

#[tokio::test]
async fn staff_sign_in_issue_and_use_a_code() {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let form_type = ("content-type", "application/x-www-form-urlencoded");

    // Sign-in needs the CSRF cookie and field to match.
    let page = server.get("/staff").await;
    assert_eq!(page.status, 200);
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let (login_cookie, header) = set_cookie(&page, "varsel_login_csrf");
    assert!(header.contains("HttpOnly") && header.contains("SameSite=Strict"));
    let form = format!("name=Lab&api_key={api_key}&csrf=forged");
    let forged = server
        .send(
            "POST",
            "/staff/login",
            &[form_type, ("cookie", &login_cookie)],
            form,
        )
        .await;
    assert_eq!(forged.status, 403);
    let form = format!(
        "name=Lab&api_key={api_key}&csrf={}",
        csrf_field(&page.text())
    );
    let no_cookie = server
        .send("POST", "/staff/login", &[form_type], form)
        .await;
    assert_eq!(no_cookie.status, 403);
    let form = format!(
        "name=Other&api_key={api_key}&csrf={}",
        csrf_field(&page.text())
    );
    let wrong_name = server
        .send(
            "POST",
            "/staff/login",
            &[form_type, ("cookie", &login_cookie)],
            form,
        )
        .await;
    assert!(wrong_name.text().contains("Unknown name or API key."));

    // Signed in: the cookie's flags, and the page.
    let (session, cookie_and_page) = sign_in(&server, &api_key).await;
    assert!(cookie_and_page.contains("HttpOnly"));
    assert!(cookie_and_page.contains("SameSite=Strict"));
    assert!(!cookie_and_page.contains("Secure"));
    let page = server
        .send("GET", "/staff", &[("cookie", &session)], "")
        .await
        .text();
    assert!(page.contains("<span id=\"issued-count\">0</span>"));

    // Issuing needs the session's CSRF token.
    let cookie = ("cookie", session.as_str());
    let forged = server
        .send(
            "POST",
            "/staff/issue",
            &[form_type, cookie],
            "test_type=likely&csrf=nope",
        )
        .await;
    assert_eq!(forged.status, 403);
    let form = format!(
        "test_type=likely&symptom_date=&test_date=&tz_offset=0&csrf={}",
        csrf_field(&page)
    );
    let issued = server
        .send("POST", "/staff/issue", &[form_type, cookie], form)
        .await
        .text();
    let code = between(&issued, "<output id=\"short-code\">", "<").to_owned();
    assert_eq!(code.len(), 8);
    assert!(issued.contains("<span id=\"issued-count\">1</span>"));

    // The device uses it.
    let verified = server
        .post_json(
            "/api/verify",
            &[],
            &json!({ "code": code, "accept": ["likely"] }),
        )
        .await;
    assert_eq!(verified.status, 200);
    let page = server.send("GET", "/staff", &[cookie], "").await.text();
    assert!(page.contains("<span id=\"used-count\">1</span>"));

    // Signing out ends the session.
    let form = format!("csrf={}", csrf_field(&page));
    server
        .send("POST", "/staff/logout", &[form_type, cookie], form)
        .await;
    let page = server.send("GET", "/staff", &[cookie], "").await.text();
    assert!(page.contains("Sign in"));
    server.stop().await;
}

#[tokio::test]
async fn behind_tls_the_session_cookie_is_secure() {
    let mut config = Config::default();
    config.server.behind_tls = true;
    let server = TestServer::start_with(config).await;
    let api_key = server.authority("Lab", None);
    let (_, cookie_and_page) = sign_in(&server, &api_key).await;
    let header = cookie_and_page.lines().next().unwrap();
    assert!(header.contains("; Secure"), "{header}");
    server.stop().await;
}
