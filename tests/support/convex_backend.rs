//! A local Convex-compatible backend for tests: `npm run local-backend`
//! (the project's own `convex/` functions on convex-test, behind the real
//! HTTP wire format) on a free port with a random admin key, started by
//! `projector::sandbox::convex` (shared with `demo` and the bench). Killed
//! with its whole process group on drop. This module adds the test-only
//! endpoints (`/_faults`, `/_stats`) and a client.
//!
//! Use with `use crate::support::convex_backend;`.

#![allow(dead_code)]

use std::time::Duration;

use projector::config::Secret;
use projector::sandbox::convex::{ConvexOptions, LocalConvex};
use projector::sink::ConvexClient;
use serde_json::Value;

pub struct ConvexBackend {
    backend: LocalConvex,
    url: String,
    admin_key: Secret,
    http: reqwest::Client,
}

impl ConvexBackend {
    /// Starts a backend and waits until it listens. Panics with the
    /// backend's output if it does not come up.
    pub fn start() -> ConvexBackend {
        Self::start_with_env(&[])
    }

    /// Like [`ConvexBackend::start`], with extra environment for the backend
    /// (`JWT_ISSUER`, `JWT_JWKS_URL`, `JWT_APPLICATION_ID`: auth.config.ts).
    pub fn start_with_env(env: &[(String, String)]) -> ConvexBackend {
        let verbose = std::env::var_os("PROJECTOR_TEST_VERBOSE").is_some();
        let backend = LocalConvex::start_blocking(&ConvexOptions {
            root: env!("CARGO_MANIFEST_DIR").into(),
            env: env.to_vec(),
            key_prefix: "local-test|".into(),
            echo_stderr: verbose,
            echo_stdout: verbose,
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("local Convex backend did not start: {e:#}"));
        ConvexBackend {
            url: backend.url.clone(),
            admin_key: backend.admin_key.clone(),
            backend,
            http: reqwest::Client::new(),
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
        self.backend.output_tail()
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
