//! The null sink: a Convex-wire HTTP server that acknowledges every
//! `projector:apply` and stores nothing. Scale tests and benchmarks point
//! `--convex-url` at it to measure the projector without Convex's cost
//! (the local backend scans whole tables per lookup, design.md §8).
//!
//! ```text
//! POST /api/mutation {"path":"projector:apply","args":{writes,deadLetters}}
//!   → {"status":"success","value":{"applied":|writes|,"skipped":0,
//!                                  "deadLettersInserted":|deadLetters|,"deadLettersSkipped":0}}
//! POST /api/query   load → [], page → {docs:[],nextCursor:null}, getActive → active (1)
//! POST /api/mutation setActive → {ok:true, active}, purge → {deleted:0,done:true}, others → null
//! GET  /_stats      → {"mutations","queries","writes","deadLetters","bytes"}
//! ```
//!
//! Writes are counted without building a JSON tree (`IgnoredAny`), so the
//! sink stays cheap next to the projector on the same cores.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::config::Secret;
use crate::sink::encoding::as_count;

/// Counters of everything the null sink has acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NullStats {
    pub mutations: u64,
    pub queries: u64,
    pub writes: u64,
    pub dead_letters: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct Counters {
    mutations: AtomicU64,
    queries: AtomicU64,
    writes: AtomicU64,
    dead_letters: AtomicU64,
    bytes: AtomicU64,
    active: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> NullStats {
        NullStats {
            mutations: self.mutations.load(Ordering::Relaxed),
            queries: self.queries.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

struct Shared {
    counters: Counters,
    /// `Convex <key>` when auth is enforced.
    auth: Option<String>,
}

/// A running null sink; stops when dropped or on [`NullSink::shutdown`].
pub struct NullSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for NullSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NullSink")
            .field("addr", &self.addr)
            .finish()
    }
}

impl NullSink {
    /// Binds `addr` (port 0 picks a free port) and serves in the
    /// background. With `admin_key`, requests must carry
    /// `Authorization: Convex <key>` like a real deployment.
    pub async fn start(addr: SocketAddr, admin_key: Option<&Secret>) -> std::io::Result<NullSink> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            counters: Counters {
                active: AtomicU64::new(1),
                ..Counters::default()
            },
            auth: admin_key.map(|k| format!("Convex {}", k.expose())),
        });
        let app = router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "null sink stopped");
            }
        });
        Ok(NullSink {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Starts on `127.0.0.1:<free port>` without auth.
    pub async fn start_local() -> std::io::Result<NullSink> {
        NullSink::start(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), None).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to pass as `--convex-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> NullStats {
        self.shared.counters.snapshot()
    }

    /// Stops accepting, lets in-flight requests finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for NullSink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/mutation", post(mutation))
        .route("/api/query", post(query))
        .route("/_stats", get(stats))
        .with_state(shared)
}

#[derive(Deserialize)]
struct Request {
    path: String,
    #[serde(default)]
    args: Args,
}

#[derive(Deserialize, Default)]
struct Args {
    writes: Option<Vec<IgnoredAny>>,
    #[serde(rename = "deadLetters")]
    dead_letters: Option<Vec<IgnoredAny>>,
    generation: Option<Value>,
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn success(value: Value) -> Response {
    json_response(
        StatusCode::OK,
        json!({"status": "success", "value": value}).to_string(),
    )
}

fn system_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"code": code, "message": message}).to_string(),
    )
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    match &shared.auth {
        None => true,
        Some(expected) => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == expected),
    }
}

fn parse(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Request, Box<Response>> {
    if !authorized(shared, headers) {
        return Err(Box::new(system_error(
            StatusCode::UNAUTHORIZED,
            "BadAdminKey",
            "The provided admin key was invalid for this instance",
        )));
    }
    shared
        .counters
        .bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    serde_json::from_slice(body).map_err(|e| {
        Box::new(system_error(
            StatusCode::BAD_REQUEST,
            "BadJsonBody",
            &format!("Failed to deserialize request body: {e}"),
        ))
    })
}

async fn mutation(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let req = match parse(&shared, &headers, &body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let c = &shared.counters;
    c.mutations.fetch_add(1, Ordering::Relaxed);
    match req.path.as_str() {
        "projector:apply" => {
            let writes = req.args.writes.map_or(0, |w| w.len()) as u64;
            let dls = req.args.dead_letters.map_or(0, |d| d.len()) as u64;
            c.writes.fetch_add(writes, Ordering::Relaxed);
            c.dead_letters.fetch_add(dls, Ordering::Relaxed);
            success(json!({
                "applied": writes,
                "skipped": 0,
                "deadLettersInserted": dls,
                "deadLettersSkipped": 0
            }))
        }
        "projector:setActive" => {
            if let Some(g) = req.args.generation.as_ref().and_then(as_count) {
                c.active.store(g, Ordering::Relaxed);
            }
            success(json!({"ok": true, "active": c.active.load(Ordering::Relaxed)}))
        }
        "projector:purge" => success(json!({"deleted": 0, "done": true})),
        // One writer only, never fenced: every acquire is epoch 1.
        "projector:acquireWriter" => success(json!({"epoch": 1, "previousHolder": null})),
        _ => success(Value::Null),
    }
}

async fn query(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let req = match parse(&shared, &headers, &body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let c = &shared.counters;
    c.queries.fetch_add(1, Ordering::Relaxed);
    match req.path.as_str() {
        "projector:load" => success(json!([])),
        "projector:page" => success(json!({"docs": [], "nextCursor": null})),
        "projector:getActive" => success(json!(c.active.load(Ordering::Relaxed))),
        "projector:schemaVersion" => success(json!(crate::sink::schema::SCHEMA_VERSION)),
        _ => success(Value::Null),
    }
}

async fn stats(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return system_error(
            StatusCode::UNAUTHORIZED,
            "BadAdminKey",
            "admin key required",
        );
    }
    json_response(
        StatusCode::OK,
        serde_json::to_string(&shared.counters.snapshot()).unwrap_or_default(),
    )
}

/// `projector null-sink` (hidden): serve until SIGINT/SIGTERM.
#[derive(clap::Args, Debug)]
pub struct NullSinkArgs {
    /// Port to listen on (0 = any free port; the URL is printed).
    #[arg(long, default_value_t = 3210)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Require `Authorization: Convex <key>` (optional).
    #[arg(long, hide_env_values = true)]
    pub admin_key: Option<String>,
}

pub async fn main(args: NullSinkArgs) -> anyhow::Result<ExitCode> {
    let key = args.admin_key.map(Secret::new);
    let sink = NullSink::start(SocketAddr::new(args.host, args.port), key.as_ref())
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    println!("null sink listening on {}", sink.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let stats = sink.stats();
    sink.shutdown().await;
    println!(
        "null sink: {} mutations, {} queries, {} writes, {} dead letters, {} bytes",
        stats.mutations, stats.queries, stats.writes, stats.dead_letters, stats.bytes
    );
    Ok(ExitCode::SUCCESS)
}
