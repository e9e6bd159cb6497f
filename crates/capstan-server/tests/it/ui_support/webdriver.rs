//! A minimal W3C WebDriver client over HTTP (reqwest), enough to drive headless Chromium
//! through chromedriver: sessions, navigation, elements, clicks, typing, scripts, screenshots.
//! Shared by the browser tests and the UI benchmark.

#![allow(dead_code)]

use base64::Engine;
use serde_json::{Value, json};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key W3C WebDriver uses for element references.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Chromium and chromedriver are, when both are installed.
pub struct Browser {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

fn which(names: &[&str]) -> Option<PathBuf> {
    for name in names {
        let direct = Path::new(name);
        if direct.is_absolute() && direct.is_file() {
            return Some(direct.to_path_buf());
        }
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

impl Browser {
    /// Finds Chromium and chromedriver (`CHROMIUM`/`CHROMEDRIVER` override). When they are
    /// missing, returns `None` after saying so, unless `CI` is set: then a missing browser is a
    /// failure (scripts/setup installs it), never a silent skip.
    pub fn find_or_skip(test: &str) -> Option<Browser> {
        let chromium = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| which(&["/usr/bin/chromium", "chromium", "chromium-browser"]));
        let chromedriver = std::env::var_os("CHROMEDRIVER")
            .map(PathBuf::from)
            .or_else(|| which(&["/usr/bin/chromedriver", "chromedriver"]));
        match (chromium, chromedriver) {
            (Some(chromium), Some(chromedriver)) => Some(Browser {
                chromium,
                chromedriver,
            }),
            (chromium, driver) => {
                let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
                let missing = match (chromium, driver) {
                    (None, None) => "chromium and chromedriver are",
                    (None, _) => "chromium is",
                    _ => "chromedriver is",
                };
                assert!(
                    !ci,
                    "{test}: {missing} not installed and CI is set (run scripts/setup)"
                );
                eprintln!(
                    "SKIPPED {test}: {missing} not installed (scripts/setup installs them; \
                     with CI=true this test fails instead)"
                );
                None
            }
        }
    }
}

/// A running chromedriver, killed on drop.
pub struct Driver {
    child: Child,
    pub base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound address").port()
}

impl Driver {
    /// Starts chromedriver on a free port and waits until it answers `/status` as ready.
    pub async fn start(browser: &Browser) -> Driver {
        let port = free_port();
        let mut command = Command::new(&browser.chromedriver);
        command.arg(format!("--port={port}"));
        // CAPSTAN_CHROMEDRIVER_LOG=FILE keeps chromedriver's verbose log (every WebDriver
        // command and DevTools event, timestamped) for diagnosing a slow or stuck page.
        if let Some(log) = std::env::var_os("CAPSTAN_CHROMEDRIVER_LOG") {
            command
                .arg(format!("--log-path={}", Path::new(&log).display()))
                .arg("--verbose");
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(resp) = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
                && let Ok(v) = resp.json::<Value>().await
                && v["value"]["ready"] == json!(true)
            {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new headless Chromium session with a fresh profile in `profile`.
    pub async fn session(&self, browser: &Browser, profile: &Path, size: (u32, u32)) -> Session {
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--window-size={},{}", size.0, size.1),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": browser.chromium.display().to_string(), "args": args},
        }}});
        let v = call(
            &self.http,
            reqwest::Method::POST,
            &format!("{}/session", self.base),
            Some(caps),
        )
        .await
        .expect("a browser session");
        let id = v["sessionId"]
            .as_str()
            .expect("sessionId in the new-session answer")
            .to_string();
        Session {
            http: self.http.clone(),
            url: format!("{}/session/{id}", self.base),
        }
    }
}

/// A WebDriver error answer: `error` code and message.
#[derive(Debug)]
pub struct WdError {
    pub code: String,
    pub message: String,
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, WdError> {
    let mut req = http.request(method.clone(), url);
    if let Some(body) = body {
        req = req.json(&body);
    } else if method == reqwest::Method::POST {
        req = req.json(&json!({}));
    }
    let resp = req.send().await.map_err(|e| WdError {
        code: "transport".into(),
        message: e.to_string(),
    })?;
    let v: Value = resp.json().await.map_err(|e| WdError {
        code: "decode".into(),
        message: e.to_string(),
    })?;
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if let Some(code) = value.get("error").and_then(Value::as_str) {
        return Err(WdError {
            code: code.to_string(),
            message: value["message"].as_str().unwrap_or_default().to_string(),
        });
    }
    Ok(value)
}

/// A browser session (one window).
pub struct Session {
    http: reqwest::Client,
    url: String,
}

/// A reference to an element of the page.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Session {
    async fn post(&self, path: &str, body: Value) -> Result<Value, WdError> {
        call(
            &self.http,
            reqwest::Method::POST,
            &format!("{}{path}", self.url),
            Some(body),
        )
        .await
    }

    async fn get(&self, path: &str) -> Result<Value, WdError> {
        call(
            &self.http,
            reqwest::Method::GET,
            &format!("{}{path}", self.url),
            None,
        )
        .await
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url}))
            .await
            .expect("navigation");
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .await
            .unwrap_or_else(|e| panic!("script failed: {e:?}\n{script}"))
    }

    /// The first element matching the CSS selector, if any.
    pub async fn find_opt(&self, css: &str) -> Option<Element> {
        match self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await
        {
            Ok(v) => v[ELEMENT_KEY].as_str().map(|s| Element(s.to_string())),
            Err(e) if e.code == "no such element" => None,
            Err(e) => panic!("finding {css}: {e:?}"),
        }
    }

    /// The first element matching the CSS selector (waits for it to appear).
    pub async fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(el) = self.find_opt(css).await {
                return el;
            }
            assert!(Instant::now() < deadline, "no element matches {css}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks an element (a real pointer click through the browser).
    pub async fn click(&self, el: &Element) {
        self.post(&format!("/element/{}/click", el.0), json!({}))
            .await
            .unwrap_or_else(|e| panic!("click: {e:?}"));
    }

    /// Finds and clicks the element matching `css`; when a live update replaced the element
    /// between the two steps, finds it again.
    pub async fn click_css(&self, css: &str) {
        for _ in 0..20 {
            let el = self.find(css).await;
            match self
                .post(&format!("/element/{}/click", el.0), json!({}))
                .await
            {
                Ok(_) => return,
                Err(e) if e.code == "stale element reference" => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("click {css}: {e:?}"),
            }
        }
        panic!("{css} kept being replaced before it could be clicked");
    }

    /// Types `text` into an element (keyboard events).
    pub async fn type_text(&self, el: &Element, text: &str) {
        self.post(&format!("/element/{}/value", el.0), json!({"text": text}))
            .await
            .unwrap_or_else(|e| panic!("typing: {e:?}"));
    }

    /// Clears an input.
    pub async fn clear(&self, el: &Element) {
        self.post(&format!("/element/{}/clear", el.0), json!({}))
            .await
            .unwrap_or_else(|e| panic!("clear: {e:?}"));
    }

    /// The rendered text of an element.
    pub async fn text(&self, el: &Element) -> String {
        self.get(&format!("/element/{}/text", el.0))
            .await
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    /// A DOM property of an element (`value` of an input, `disabled` of a button…), as the
    /// browser holds it now; `None` when the element is gone.
    pub async fn property(&self, el: &Element, name: &str) -> Option<Value> {
        self.get(&format!("/element/{}/property/{name}", el.0))
            .await
            .ok()
    }

    /// Polls `probe` (WebDriver reads of the page as a user sees it) until it returns `Some`;
    /// panics with `what` and the page's text after a generous timeout (a correctness wait,
    /// not a timing assertion).
    pub async fn wait_until<T>(
        &self,
        what: &str,
        mut probe: impl AsyncFnMut(&Session) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(v) = probe(self).await {
                return v;
            }
            if Instant::now() > deadline {
                let page = self.exec("return document.body.innerText;", vec![]).await;
                panic!(
                    "gave up waiting for {what}; page:\n{}",
                    page.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends keys to whatever has the focus (Tab, Enter, Space…), as a keyboard user would.
    pub async fn keys(&self, keys: &str) {
        let mut actions = Vec::new();
        for ch in keys.chars() {
            actions.push(json!({"type": "keyDown", "value": ch.to_string()}));
            actions.push(json!({"type": "keyUp", "value": ch.to_string()}));
        }
        self.post(
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        )
        .await
        .unwrap_or_else(|e| panic!("keys: {e:?}"));
    }

    /// Waits until `predicate` (a JS expression) is truthy; panics with `what` and the page's
    /// text after a generous timeout (this is a correctness wait, not a timing assertion).
    pub async fn wait_for(&self, what: &str, predicate: &str) -> Value {
        let script = format!("return ({predicate});");
        self.wait_until(&format!("{what} ({predicate})"), async |s| {
            // A script error (an element not rendered yet) counts as "not yet".
            let v = s
                .post("/execute/sync", json!({"script": script, "args": []}))
                .await
                .unwrap_or(Value::Null);
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            truthy.then_some(v)
        })
        .await
    }

    /// Saves a PNG screenshot of the window.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.get("/screenshot").await.expect("screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("artifact directory");
        }
        std::fs::write(path, png).expect("screenshot written");
    }

    /// Ends the session (closes the browser).
    pub async fn quit(self) {
        let _ = call(&self.http, reqwest::Method::DELETE, &self.url, None).await;
    }
}

/// Where screenshots go: `target/ui-artifacts/` of the workspace.
pub fn artifacts_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../target"));
    target.join("ui-artifacts")
}
