//! Private repositories: credentials from Secrets in the shape `capstan repo add` writes them
//! (labelled `capstan.dev/secret-type`, keys `url`, `username`, `password`), against Git
//! repositories served by `git http-backend` behind HTTP basic authentication over plain http
//! (allowed in test builds only, see the dev-dependencies). `capstan repo add`'s own output is
//! checked by the capstan crate's CLI tests.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_controller::creds::{SECRET_TYPE_LABEL, TYPE_REPO_CREDS, TYPE_REPOSITORY};
use capstan_controller::{Config, Controller, ops};
use capstan_testkit::{GitRepo, temp_dir};
use common::{Env, cm_yaml, sync_status};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, PostParams};

const USER: &str = "deployer";
const PASSWORD: &str = "pw-Canary-7Hq2xZ-never-shown";

/// A small HTTP/1.1 server in front of `git http-backend` that demands basic authentication.
struct GitHttp {
    port: u16,
}

impl GitHttp {
    fn start(root: PathBuf) -> GitHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // ByteString serialises as base64: the expected Authorization header without a base64 crate.
        let b64 = serde_json::to_value(ByteString(format!("{USER}:{PASSWORD}").into_bytes()))
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        let expected = format!("Basic {b64}");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let root = root.clone();
                let expected = expected.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &root, &expected);
                });
            }
        });
        GitHttp { port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

fn serve(stream: TcpStream, root: &Path, expected_auth: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("GET").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end().to_string();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(len) = header("content-length").and_then(|v| v.parse().ok()) {
            body = vec![0; len];
            reader.read_exact(&mut body)?;
        }
        if header("authorization").as_deref() != Some(expected_auth) {
            out.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\n\r\n",
            )?;
            continue;
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let mut cmd = Command::new("git");
        cmd.arg("http-backend")
            .env("GIT_PROJECT_ROOT", root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", &method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("REMOTE_USER", USER)
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(ct) = header("content-type") {
            cmd.env("CONTENT_TYPE", ct);
        }
        if let Some(p) = header("git-protocol") {
            cmd.env("GIT_PROTOCOL", p);
        }
        let mut child = cmd.spawn()?;
        child.stdin.take().unwrap().write_all(&body)?;
        let output = child.wait_with_output()?;
        let raw = output.stdout;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| (i, 4))
            .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
        let (head, rest) = match split {
            Some((i, n)) => (
                String::from_utf8_lossy(&raw[..i]).into_owned(),
                &raw[i + n..],
            ),
            None => (String::new(), &raw[..]),
        };
        let mut status = "200 OK".to_string();
        let mut response_headers = String::new();
        for h in head.lines() {
            if let Some(s) = h.strip_prefix("Status:") {
                status = s.trim().to_string();
            } else if !h.trim().is_empty() {
                response_headers.push_str(h.trim_end());
                response_headers.push_str("\r\n");
            }
        }
        write!(
            out,
            "HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\n\r\n",
            rest.len()
        )?;
        out.write_all(rest)?;
        out.flush()?;
    }
}

/// A writer that keeps everything the controller logs.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes a credential Secret as `capstan repo add` does (`kind`: repository or repo-creds).
async fn add_secret(env: &Env, name: &str, kind: &str, url: &str) {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "capstan", "labels": {SECRET_TYPE_LABEL: kind}},
        "type": "Opaque",
        "stringData": {"url": url, "username": USER, "password": PASSWORD},
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.client.clone(), "capstan")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file()
                && std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

fn served_repo(root: &Path, path: &str, cm: &str) {
    GitRepo::init(root.join(path))
        .write("cm.yaml", &cm_yaml(cm, "private"))
        .commit("first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_repositories_use_credential_secrets_and_never_show_the_password() {
    let logs = LogBuffer::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .init();

    let mut env = Env::start().await;
    // Our own controller, so that its cache directory can be searched afterwards.
    env.stop_controller();
    let cache = temp_dir("controller-creds-cache");
    let controller = Controller::new(
        env.client.clone(),
        Config {
            reconcile_interval: Duration::from_secs(2),
            cache_dir: cache.path().to_path_buf(),
            ..Config::default()
        },
    )
    .unwrap();
    let controller = tokio::spawn(controller.run());

    let served = temp_dir("controller-creds-served");
    served_repo(served.path(), "team/app1", "from-app1");
    served_repo(served.path(), "team/app2", "from-app2");
    let server = GitHttp::start(served.path().to_path_buf());

    // Without a Secret: the comparison fails, naming the URL and the authentication failure.
    let url1 = server.url("team/app1");
    let mut spec = env.spec(".", None);
    spec.source.repo_url = url1.clone();
    env.create_app("private1", spec).await;
    let failed = env
        .until("private1", "a ComparisonError", |a| {
            a.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "ComparisonError" && c.message.contains(&url1))
            })
        })
        .await;
    let condition = failed
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "ComparisonError")
        .unwrap()
        .message
        .clone();
    assert!(condition.contains("authentication failed"), "{condition}");

    // A repository Secret for the URL: the application compares and syncs.
    add_secret(&env, "repo-app1", TYPE_REPOSITORY, &url1).await;
    env.until("private1", "OutOfSync after the Secret", |a| {
        sync_status(a) == "OutOfSync"
    })
    .await;
    ops::request_sync(&env.apps, "private1", Default::default(), "tester")
        .await
        .unwrap();
    env.until("private1", "Synced", |a| sync_status(a) == "Synced")
        .await;
    assert_eq!(
        common::cm_value(env.cm("from-app1").await.as_ref()).as_deref(),
        Some("private")
    );

    // A template for the prefix serves a second repository under it.
    let url2 = server.url("team/app2");
    let mut spec = env.spec(".", None);
    spec.source.repo_url = url2.clone();
    env.create_app("private2", spec).await;
    env.until("private2", "a ComparisonError", |a| {
        a.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "ComparisonError" && c.message.contains(&url2))
        })
    })
    .await;
    add_secret(&env, "creds-team", TYPE_REPO_CREDS, &server.url("team")).await;
    env.until("private2", "OutOfSync after the template", |a| {
        sync_status(a) == "OutOfSync"
    })
    .await;

    // The password appears nowhere a person or a log collector would look.
    for name in ["private1", "private2"] {
        let app = env.apps.get(name).await.unwrap();
        let text = serde_json::to_string(&app).unwrap();
        assert!(!text.contains(PASSWORD), "{name}: {text}");
    }
    let events: Api<Event> = Api::namespaced(env.client.clone(), "capstan");
    let events = events.list(&ListParams::default()).await.unwrap();
    assert!(!events.items.is_empty());
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(PASSWORD), "{text}");
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logged.contains("capstan"), "the log capture saw nothing");
    assert!(!logged.contains(PASSWORD), "password in the log");
    let hits = files_containing(cache.path(), PASSWORD.as_bytes());
    assert!(hits.is_empty(), "password in the cache: {hits:?}");
    assert!(
        !files_containing(cache.path(), b"from-app1").is_empty(),
        "the cache holds the fetched repository (so the search above looked at something)"
    );

    controller.abort();
}
