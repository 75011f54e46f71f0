//! A local Convex-compatible backend for tests: `npm run local-backend`
//! (the project's own `convex/` functions on convex-test, behind the real
//! HTTP wire format) on a free port with a random admin key. Killed with
//! its whole process group on drop.
//!
//! Use with `use crate::support::convex_backend;`.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use projector::config::Secret;
use projector::sink::ConvexClient;
use serde_json::Value;

/// How long `npm run local-backend` may take to print `listening`.
const START_TIMEOUT: Duration = Duration::from_secs(90);

pub struct ConvexBackend {
    child: Child,
    url: String,
    admin_key: Secret,
    http: reqwest::Client,
    output: Arc<Mutex<VecDeque<String>>>,
}

impl ConvexBackend {
    /// Starts a backend and waits until it listens. Panics with the
    /// backend's output if it does not come up.
    pub fn start() -> ConvexBackend {
        let mut last_err = String::new();
        // A free port can be taken between probing and binding: retry.
        for _ in 0..3 {
            match Self::try_start() {
                Ok(b) => return b,
                Err(e) => last_err = e,
            }
        }
        panic!("local Convex backend did not start: {last_err}");
    }

    fn try_start() -> Result<ConvexBackend, String> {
        let root = env!("CARGO_MANIFEST_DIR");
        if !std::path::Path::new(root).join("node_modules").is_dir() {
            return Err(format!(
                "{root}/node_modules is missing: run `npm ci` in the repository root first"
            ));
        }
        let port = free_port();
        let key = random_key();
        let mut child = Command::new("npm")
            .args(["run", "--silent", "local-backend", "--"])
            .args(["--port", &port.to_string()])
            // By environment: process arguments are visible to every local user.
            .env("CONVEX_ADMIN_KEY", key.expose())
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run npm: {e}"))?;
        let output: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (tx, rx) = mpsc::channel::<()>();
        let verbose = std::env::var_os("PROJECTOR_TEST_VERBOSE").is_some();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        for (stream, tx) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, Some(tx)),
            (Box::new(stderr), None),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if verbose {
                        eprintln!("[local-backend] {line}");
                    }
                    if let Some(tx) = &tx {
                        if line.contains("listening") {
                            let _ = tx.send(());
                        }
                    }
                    let mut o = output.lock().unwrap();
                    o.push_back(line);
                    if o.len() > 200 {
                        o.pop_front();
                    }
                }
            });
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let mut backend = ConvexBackend {
            child,
            url: format!("http://127.0.0.1:{port}"),
            admin_key: key,
            http: reqwest::Client::new(),
            output,
        };
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(()) => return Ok(backend),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = backend.child.try_wait() {
                        return Err(format!(
                            "it exited with {status}:\n{}",
                            backend.output_tail()
                        ));
                    }
                    if Instant::now() > deadline {
                        return Err(format!(
                            "no `listening` line within {START_TIMEOUT:?}:\n{}",
                            backend.output_tail()
                        ));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(100));
                    return Err(format!("its stdout closed:\n{}", backend.output_tail()));
                }
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn admin_key(&self) -> Secret {
        self.admin_key.clone()
    }

    /// A client with the given per-request timeout.
    pub fn client(&self, timeout: Duration) -> ConvexClient {
        ConvexClient::new(&self.url, self.admin_key.clone(), timeout).unwrap()
    }

    /// The last lines the backend printed (for failure messages).
    pub fn output_tail(&self) -> String {
        self.output
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Arms a fault: `{"kind":"status","status":503,"count":2}`, ...
    pub async fn fault(&self, fault: Value) {
        let resp = self
            .http
            .post(format!("{}/_faults", self.url))
            .header(
                "Authorization",
                format!("Convex {}", self.admin_key.expose()),
            )
            .json(&fault)
            .send()
            .await
            .expect("POST /_faults");
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "POST /_faults {fault} -> {status}: {body}"
        );
    }

    pub async fn clear_faults(&self) {
        self.fault(serde_json::json!({"kind": "clear"})).await;
    }

    /// `{"mutations","queries","writes"}` counters.
    pub async fn stats(&self) -> Value {
        let resp = self
            .http
            .get(format!("{}/_stats", self.url))
            .header(
                "Authorization",
                format!("Convex {}", self.admin_key.expose()),
            )
            .send()
            .await
            .expect("GET /_stats");
        assert!(
            resp.status().is_success(),
            "GET /_stats -> {}",
            resp.status()
        );
        resp.json().await.expect("/_stats JSON")
    }
}

impl Drop for ConvexBackend {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: plain syscall; the negative pid names the process group
        // created by `process_group(0)` (npm, node, and their children).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

fn random_key() -> Secret {
    use rand::Rng;
    let n: u128 = rand::thread_rng().gen();
    Secret::new(format!("local-test|{n:032x}"))
}
