//! The staff page in a real headless Chromium, driven over WebDriver by `chromedriver`: sign in,
//! issue a code, read it off the page, and use it in the device flow.
//!
//! Without `chromedriver` and `chromium` the test prints why it is skipped and passes, unless
//! `VARSEL_REQUIRE_BROWSER=1`, in which case it fails. `VARSEL_CHROMEDRIVER` and
//! `VARSEL_CHROMIUM` override the default paths (`/usr/bin/chromedriver`, `/usr/bin/chromium`).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TestServer;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// The W3C WebDriver key under which an element reference is returned.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long [`Browser::find`] waits for an element: pages load in milliseconds here, but a busy
/// CI machine can take seconds.
const FIND_TIMEOUT: Duration = Duration::from_secs(15);

fn tool(variable: &str, default: &str) -> PathBuf {
    std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// A chromedriver process, killed on drop.
struct Driver {
    child: Child,
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(path: &PathBuf) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        for _ in 0..100 {
            if driver
                .try_call("GET", "/status", None)
                .await
                .is_some_and(|v| v["ready"] == true)
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not become ready");
    }

    async fn try_call(&self, method: &str, path: &str, body: Option<&Value>) -> Option<Value> {
        let bytes = body.map_or_else(Bytes::new, |body| Bytes::from(body.to_string()));
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(bytes))
            .ok()?;
        let response = self.client.request(request).await.ok()?;
        let body = response.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice::<Value>(&body)
            .ok()
            .map(|reply| reply["value"].clone())
    }

    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let value = self
            .try_call(method, path, body)
            .await
            .expect("chromedriver answers");
        assert!(
            value.get("error").is_none(),
            "WebDriver {method} {path}: {value}"
        );
        value
    }
}

/// One browser session.
struct Browser<'d> {
    driver: &'d Driver,
    session: String,
}

impl<'d> Browser<'d> {
    async fn open(driver: &'d Driver, chromium: &PathBuf, profile: &std::path::Path) -> Self {
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }}});
        let value = driver.call("POST", "/session", Some(&capabilities)).await;
        let session = value["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Self { driver, session }
    }

    async fn go(&self, url: &str) {
        let path = format!("/session/{}/url", self.session);
        self.driver
            .call("POST", &path, Some(&json!({ "url": url })))
            .await;
    }

    /// Waits up to [`FIND_TIMEOUT`] for an element to appear, since a click on a submit button
    /// can return before the next page has loaded. On timeout, the panic shows the page's text.
    async fn find(&self, css: &str) -> String {
        let path = format!("/session/{}/element", self.session);
        let query = json!({ "using": "css selector", "value": css });
        let deadline = tokio::time::Instant::now() + FIND_TIMEOUT;
        loop {
            let value = self.driver.try_call("POST", &path, Some(&query)).await;
            if let Some(element) = value.as_ref().and_then(|v| v[ELEMENT].as_str()) {
                return element.to_owned();
            }
            if tokio::time::Instant::now() >= deadline {
                let page = self.page_text().await;
                let reply = value.map_or(Value::Null, |v| v["message"].clone());
                panic!("no element {css} within {FIND_TIMEOUT:?}: {reply}\npage: {page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The visible text of the current page, for failure messages.
    async fn page_text(&self) -> String {
        let path = format!("/session/{}/element", self.session);
        let query = json!({ "using": "css selector", "value": "body" });
        let Some(body) = self.driver.try_call("POST", &path, Some(&query)).await else {
            return "(no page)".to_owned();
        };
        let Some(element) = body[ELEMENT].as_str() else {
            return format!("(no body: {body})");
        };
        let path = format!("/session/{}/element/{element}/text", self.session);
        let text = self.driver.try_call("GET", &path, None).await;
        text.map_or_else(|| "(no text)".to_owned(), |text| text.to_string())
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        let path = format!("/session/{}/element/{element}/value", self.session);
        self.driver
            .call("POST", &path, Some(&json!({ "text": text })))
            .await;
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        let path = format!("/session/{}/element/{element}/click", self.session);
        self.driver.call("POST", &path, Some(&json!({}))).await;
    }

    async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        let path = format!("/session/{}/element/{element}/text", self.session);
        self.driver
            .call("GET", &path, None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn close(self) {
        let path = format!("/session/{}", self.session);
        self.driver.call("DELETE", &path, None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_issue_a_code_in_a_real_browser() {
    let driver_path = tool("VARSEL_CHROMEDRIVER", "/usr/bin/chromedriver");
    let chromium = tool("VARSEL_CHROMIUM", "/usr/bin/chromium");
    if !driver_path.exists() || !chromium.exists() {
        let reason = format!(
            "browser test skipped: {} or {} not found (apt-get install chromium chromium-driver)",
            driver_path.display(),
            chromium.display()
        );
        assert!(
            std::env::var("VARSEL_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "{reason}"
        );
        eprintln!("{reason}");
        return;
    }
    let outcome = tokio::time::timeout(Duration::from_secs(120), run(driver_path, chromium)).await;
    outcome.expect("the browser test finished within two minutes");
}

async fn run(driver_path: PathBuf, chromium: PathBuf) {
    let server = TestServer::start().await;
    let api_key = server.authority("Lab", None);
    let driver = Driver::start(&driver_path).await;
    let profile = tempfile::tempdir().unwrap();
    let browser = Browser::open(&driver, &chromium, profile.path()).await;

    // Sign in with the authority's name and API key.
    browser.go(&server.url("/staff")).await;
    browser.type_into("#name", "Lab").await;
    browser.type_into("#api-key", &api_key).await;
    browser.click("#sign-in").await;
    assert_eq!(browser.text("#issued-count").await, "0");

    // Issue a code for a likely diagnosis and read it off the page.
    browser.click("#test-type option[value=likely]").await;
    browser.click("#issue").await;
    let code = browser.text("#short-code").await;
    assert_eq!(code.len(), 8, "read {code:?}");
    assert!(browser.text("#short-expiry").await.ends_with("UTC"));
    assert_eq!(browser.text("#issued-count").await, "1");
    browser.close().await;

    // A device uses the code.
    let verified = server
        .post_json(
            "/api/verify",
            &[],
            &json!({ "code": code, "accept": ["likely"] }),
        )
        .await;
    assert_eq!(verified.status, 200, "{}", verified.text());
    assert_eq!(verified.json()["testtype"], "likely");
    server.stop().await;
}
