//! Helpers for the browser tests: a static file server for the Trunk-built page and a headless
//! Chromium driven over WebDriver (chromedriver + fantoccini).
#![allow(dead_code)]

pub mod hub;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};

/// Where Trunk put the page (`scripts/test` builds it first), overridable with `SEGCLIP_DIST`.
pub fn dist_dir() -> PathBuf {
    let dir = std::env::var_os("SEGCLIP_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dist"));
    assert!(
        dir.join("index.html").is_file(),
        "no built page at {} (index.html missing): run `scripts/test`, or build it with \
         `trunk build` and/or set SEGCLIP_DIST",
        dir.display()
    );
    dir
}

/// Copies a folder tree (a built page, to change its weights or presets for a test).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Directory for screenshots and other artefacts of the browser tests.
pub fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-output");
    std::fs::create_dir_all(&dir).expect("create test-output/");
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript",
        "wasm" => "application/wasm",
        "css" => "text/css",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

/// Serves `root` on 127.0.0.1 from a background thread, logging each request path so tests can
/// check what the page fetched. Returns the base URL and the shared request log.
pub fn serve(root: PathBuf) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("bind static server");
    let port = server.server_addr().to_ip().unwrap().port();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let requests = log.clone();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let url = request.url().split('?').next().unwrap_or("/").to_string();
            requests.lock().unwrap().push(url.clone());
            let relative = url.trim_start_matches('/');
            let mut path = root.join(if relative.is_empty() { "index.html" } else { relative });
            if path.is_dir() {
                path = path.join("index.html");
            }
            // Refuse anything that escapes the root.
            let inside = path.canonicalize().map(|p| p.starts_with(&root)).unwrap_or(false);
            let response = match std::fs::read(&path) {
                Ok(bytes) if inside => tiny_http::Response::from_data(bytes).with_header(
                    tiny_http::Header::from_bytes("Content-Type", content_type(&path)).unwrap(),
                ),
                _ => tiny_http::Response::from_data(b"not found".to_vec()).with_status_code(404),
            };
            let _ = request.respond(response);
        }
    });
    (format!("http://127.0.0.1:{port}"), log)
}

/// A headless Chromium session; the chromedriver process ends with it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: TempDir,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    /// Starts Chromium; `webgpu` turns on WebGPU (SwiftShader on a machine without a GPU).
    pub async fn start(webgpu: bool) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (Debian package chromium-driver; scripts/test installs it)");
        let profile = std::env::temp_dir().join(format!("segclip-chrome-{port}"));
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--no-first-run".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1200,900".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        if webgpu {
            args.push("--enable-unsafe-webgpu".into());
        } else {
            args.push("--disable-features=WebGPU,Vulkan".into());
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium_binary(), "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
                Ok(client) => break client,
                Err(e) if Instant::now() > deadline => panic!("could not start a WebDriver session: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        Browser { client, driver, _profile: TempDir(profile) }
    }

    /// Evaluates `expression` in the page and returns its JSON value.
    pub async fn eval(&self, expression: &str) -> Value {
        self.client
            .execute(&format!("return ({expression});"), vec![])
            .await
            .unwrap_or_else(|e| panic!("evaluating `{expression}` failed: {e}"))
    }

    /// The page's console output so far (captured by www/index.html).
    pub async fn console(&self) -> String {
        match self.eval("window.segclipConsole || []").await {
            Value::Array(lines) => {
                lines.iter().map(|l| l.as_str().unwrap_or_default().to_string()).collect::<Vec<_>>().join("\n")
            }
            other => other.to_string(),
        }
    }

    /// Waits until `window.segclipStatus.state` is one of `states`, then returns the status. On a
    /// timeout it panics with the page's console output.
    pub async fn wait_for_state(&self, states: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.eval("window.segclipStatus || null").await;
            if let Some(state) = status.get("state").and_then(|s| s.as_str()) {
                if states.contains(&state) {
                    return status;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "page did not reach {states:?} within {timeout:?}; last status {status}\n--- console ---\n{}",
                    self.console().await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = output_dir().join(name);
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn chromium_binary() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}
