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
//!
//! ## The Convex model ([`ConvexModel`])
//!
//! Off by default ([`ConvexModel::immediate`]: every answer at once, as
//! before). `projector null-sink --model starter` (or the single flags)
//! makes mutations behave like a deployment that pushes back:
//!
//! ```text
//! mutation ─▶ wait for one of N slots (≤ queue timeout) ──timeout──▶ 429 TooManyConcurrentRequests
//!               │ (all mutations, like the function runner's semaphore)
//!               ▼
//!             apply only: bytes committed in the last second ≥ budget ──▶ 429 TooManyWrites
//!               │ (no Retry-After; the request itself is not counted)
//!               ▼
//!             sleep base + per-document × (writes + dead letters)
//!               │ apply only, seeded RNG: OCC ──▶ sleep 4 more times, 503 OptimisticConcurrencyControlFailure
//!               ▼
//!             commit: its body bytes enter the write window; success
//! ```
//!
//! A mutation runs in its own task once admitted, so a client that gives
//! up (timeout) does not free its slot early: the server keeps running it,
//! as Convex does.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

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
    /// Model: mutations refused after waiting the queue timeout for a slot.
    #[serde(default)]
    pub(crate) rejected_concurrency: u64,
    /// Model: `apply`s refused by the write-throughput budget.
    #[serde(default)]
    pub(crate) rejected_writes: u64,
    /// Model: `apply`s answered with an OCC conflict (not applied).
    #[serde(default)]
    pub(crate) occ_conflicts: u64,
    /// Model: the most mutations executing at once so far.
    #[serde(default)]
    pub(crate) max_in_flight: u64,
    /// Request bytes of the `apply`s that succeeded (what the write budget
    /// counts; `bytes` also counts refused and conflicting ones).
    #[serde(default)]
    pub(crate) applied_bytes: u64,
}

#[derive(Default)]
struct Counters {
    mutations: AtomicU64,
    queries: AtomicU64,
    writes: AtomicU64,
    dead_letters: AtomicU64,
    bytes: AtomicU64,
    active: AtomicU64,
    rejected_concurrency: AtomicU64,
    rejected_writes: AtomicU64,
    occ_conflicts: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    applied_bytes: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> NullStats {
        NullStats {
            mutations: self.mutations.load(Ordering::Relaxed),
            queries: self.queries.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            rejected_concurrency: self.rejected_concurrency.load(Ordering::Relaxed),
            rejected_writes: self.rejected_writes.load(Ordering::Relaxed),
            occ_conflicts: self.occ_conflicts.load(Ordering::Relaxed),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
            applied_bytes: self.applied_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Concurrent mutations of Convex's Free and Starter plans (the S16 tier;
/// docs.convex.dev/production/state/limits; 256 on Professional).
pub(crate) const STARTER_MAX_CONCURRENT_MUTATIONS: usize = 16;

/// How long a mutation waits for a slot before Convex refuses it with 429
/// `TooManyConcurrentRequests` (`APPLICATION_FUNCTION_RUNNER_SEMAPHORE_TIMEOUT`,
/// 5,000 ms by default in convex-backend's knobs).
pub(crate) const CONVEX_SEMAPHORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes a deployment may commit per second before 429 `TooManyWrites`
/// ("limited to 4 MiB bytes written per 1 second").
pub(crate) const STARTER_WRITE_BYTES_PER_SEC: u64 = 4 << 20;

/// The write budget's window: Convex sums the commits of the last second.
pub(crate) const WRITE_WINDOW: Duration = Duration::from_secs(1);

/// Times the backend re-runs a mutation that lost an OCC race before it
/// answers 503: a conflict costs this many extra executions.
pub(crate) const OCC_BACKEND_RETRIES: u32 = 4;

/// Assumed, not documented: a small `apply` on a cloud deployment takes
/// tens of milliseconds from request to answer.
pub(crate) const STARTER_BASE_LATENCY: Duration = Duration::from_millis(20);

/// Assumed, not documented: what each document adds to an `apply` (one
/// indexed lookup and one `db.replace`).
pub(crate) const STARTER_PER_DOC_LATENCY: Duration = Duration::from_micros(20);

/// How the null sink answers mutations. [`ConvexModel::immediate`] (the
/// default) answers every one at once and refuses none.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConvexModel {
    /// Every mutation takes at least this long.
    pub(crate) base_latency: Duration,
    /// Added per document an `apply` writes (writes + dead letters).
    pub(crate) per_doc_latency: Duration,
    /// Mutations executing at once; `None` = unlimited.
    pub(crate) max_concurrent: Option<usize>,
    /// How long a mutation waits for a slot before it is refused.
    pub(crate) queue_timeout: Duration,
    /// HTTP status of that refusal (Convex: 429; 503 to test the other path).
    pub(crate) overload_status: StatusCode,
    /// `apply` body bytes committed per [`WRITE_WINDOW`]; `None` = unlimited.
    pub(crate) write_bytes_per_window: Option<u64>,
    /// Probability that an admitted `apply` ends in an OCC conflict (0..=1).
    pub(crate) occ_rate: f64,
    /// Seed of the OCC draws: the same seed gives the same sequence.
    pub(crate) seed: u64,
}

impl Default for ConvexModel {
    fn default() -> Self {
        ConvexModel::immediate()
    }
}

impl ConvexModel {
    /// Today's null sink: no latency, no limits, no conflicts.
    pub(crate) fn immediate() -> Self {
        ConvexModel {
            base_latency: Duration::ZERO,
            per_doc_latency: Duration::ZERO,
            max_concurrent: None,
            queue_timeout: CONVEX_SEMAPHORE_TIMEOUT,
            overload_status: StatusCode::TOO_MANY_REQUESTS,
            write_bytes_per_window: None,
            occ_rate: 0.0,
            seed: 1,
        }
    }

    /// A Free/Starter deployment: its documented limits, the assumed
    /// latencies above, no conflicts.
    pub(crate) fn starter() -> Self {
        ConvexModel {
            base_latency: STARTER_BASE_LATENCY,
            per_doc_latency: STARTER_PER_DOC_LATENCY,
            max_concurrent: Some(STARTER_MAX_CONCURRENT_MUTATIONS),
            write_bytes_per_window: Some(STARTER_WRITE_BYTES_PER_SEC),
            ..ConvexModel::immediate()
        }
    }

    /// Refuses what the model cannot run with.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.occ_rate) {
            return Err(format!(
                "--occ-rate {} is not a probability (0 to 1)",
                self.occ_rate
            ));
        }
        if self.max_concurrent == Some(0) {
            return Err("--max-concurrent-mutations 0 would refuse every mutation".into());
        }
        if self.write_bytes_per_window == Some(0) {
            return Err("--write-bytes-per-sec 0 would refuse every apply".into());
        }
        if !(self.overload_status.is_client_error() || self.overload_status.is_server_error()) {
            return Err(format!(
                "--overload-status {} is not an error status",
                self.overload_status
            ));
        }
        Ok(())
    }

    fn latency(&self, docs: u64) -> Duration {
        let docs = u32::try_from(docs).unwrap_or(u32::MAX);
        self.base_latency
            .saturating_add(self.per_doc_latency.saturating_mul(docs))
    }
}

/// The model's mutable state. Invariant: with `max_concurrent = Some(n)`
/// the semaphore has `n` permits and every executing mutation holds one.
struct ModelState {
    model: ConvexModel,
    slots: Option<Arc<Semaphore>>,
    /// (commit time, bytes) of the commits inside the last [`WRITE_WINDOW`],
    /// oldest first, and their sum.
    window: Mutex<(VecDeque<(Instant, u64)>, u64)>,
    rng: Mutex<StdRng>,
}

/// A lock that survives a panicked holder: the guarded values are counters
/// and an RNG, valid after any partial update.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ModelState {
    fn new(model: ConvexModel) -> Self {
        ModelState {
            slots: model.max_concurrent.map(|n| Arc::new(Semaphore::new(n))),
            window: Mutex::new((VecDeque::new(), 0)),
            rng: Mutex::new(StdRng::seed_from_u64(model.seed)),
            model,
        }
    }

    /// True when the model changes nothing: the handler answers inline.
    fn is_immediate(&self) -> bool {
        let m = &self.model;
        m.base_latency.is_zero()
            && m.per_doc_latency.is_zero()
            && m.max_concurrent.is_none()
            && m.write_bytes_per_window.is_none()
            && m.occ_rate == 0.0
    }

    /// Waits for a slot; `Err(())` after the queue timeout.
    async fn acquire(&self) -> Result<Option<OwnedSemaphorePermit>, ()> {
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        match tokio::time::timeout(self.model.queue_timeout, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            // Timed out, or closed (never: the semaphore is not closed).
            _ => Err(()),
        }
    }

    /// Bytes committed within the window ending now.
    fn window_bytes(&self, now: Instant) -> u64 {
        let mut w = lock(&self.window);
        let (commits, sum) = &mut *w;
        while let Some(&(t, b)) = commits.front() {
            if now.duration_since(t) < WRITE_WINDOW {
                break;
            }
            commits.pop_front();
            *sum -= b;
        }
        *sum
    }

    /// Whether an `apply` may start: the commits of the last window are
    /// under the budget (the request itself does not count, as in Convex,
    /// so one large commit can take the window over).
    fn writes_admitted(&self) -> bool {
        match self.model.write_bytes_per_window {
            None => true,
            Some(budget) => self.window_bytes(Instant::now()) < budget,
        }
    }

    fn commit(&self, bytes: u64) {
        if self.model.write_bytes_per_window.is_none() {
            return;
        }
        let mut w = lock(&self.window);
        w.0.push_back((Instant::now(), bytes));
        w.1 += bytes;
    }

    fn occ(&self) -> bool {
        self.model.occ_rate > 0.0 && lock(&self.rng).gen::<f64>() < self.model.occ_rate
    }
}

struct Shared {
    counters: Counters,
    /// `Convex <key>` when auth is enforced.
    auth: Option<String>,
    model: ModelState,
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
        NullSink::start_with_model(addr, admin_key, ConvexModel::immediate()).await
    }

    /// [`NullSink::start`] answering as `model` says.
    pub(crate) async fn start_with_model(
        addr: SocketAddr,
        admin_key: Option<&Secret>,
        model: ConvexModel,
    ) -> std::io::Result<NullSink> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            counters: Counters {
                active: AtomicU64::new(1),
                ..Counters::default()
            },
            auth: admin_key.map(|k| format!("Convex {}", k.expose())),
            model: ModelState::new(model),
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

/// Counts one executing mutation for `max_in_flight` while it lives.
struct InFlight<'a>(&'a Counters);

impl<'a> InFlight<'a> {
    fn enter(c: &'a Counters) -> Self {
        let now = c.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        c.max_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(c)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Documents an `apply` writes: what the per-document latency is charged on.
fn documents(req: &Request) -> u64 {
    let writes = req.args.writes.as_ref().map_or(0, Vec::len);
    let dls = req.args.dead_letters.as_ref().map_or(0, Vec::len);
    (writes + dls) as u64
}

async fn mutation(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let req = match parse(&shared, &headers, &body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    shared.counters.mutations.fetch_add(1, Ordering::Relaxed);
    let body_len = body.len() as u64;
    if shared.model.is_immediate() {
        return answer(&shared.counters, req, body_len);
    }
    let model = &shared.model;
    let Ok(permit) = model.acquire().await else {
        shared
            .counters
            .rejected_concurrency
            .fetch_add(1, Ordering::Relaxed);
        let n = model.model.max_concurrent.unwrap_or_default();
        return system_error(
            model.model.overload_status,
            "TooManyConcurrentRequests",
            &format!(
                "Too many concurrent requests. Your backend is limited to {n} concurrent mutations."
            ),
        );
    };
    let is_apply = req.path == "projector:apply";
    if is_apply && !model.writes_admitted() {
        shared
            .counters
            .rejected_writes
            .fetch_add(1, Ordering::Relaxed);
        let budget = model.model.write_bytes_per_window.unwrap_or_default();
        return system_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyWrites",
            &format!(
                "Too many writes per second. Your deployment is limited to {budget} bytes \
                 written per 1 second."
            ),
        );
    }
    // Admitted: the mutation runs to its end in its own task, holding its
    // slot, even if the client stops waiting.
    let run = shared.clone();
    let task = tokio::spawn(async move {
        let _slot = permit;
        let _flight = InFlight::enter(&run.counters);
        let latency = run
            .model
            .model
            .latency(if is_apply { documents(&req) } else { 0 });
        tokio::time::sleep(latency).await;
        if is_apply && run.model.occ() {
            tokio::time::sleep(latency.saturating_mul(OCC_BACKEND_RETRIES)).await;
            run.counters.occ_conflicts.fetch_add(1, Ordering::Relaxed);
            return system_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "OptimisticConcurrencyControlFailure",
                "Documents read from or written to the table changed while this mutation was \
                 being run and on every subsequent retry.",
            );
        }
        if is_apply {
            run.model.commit(body_len);
        }
        answer(&run.counters, req, body_len)
    });
    task.await.unwrap_or_else(|e| {
        system_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            &format!("the null sink's mutation task failed: {e}"),
        )
    })
}

/// The answer of an executed mutation (counted as applied); `body_len`:
/// its request's bytes.
fn answer(c: &Counters, req: Request, body_len: u64) -> Response {
    match req.path.as_str() {
        "projector:apply" => {
            c.applied_bytes.fetch_add(body_len, Ordering::Relaxed);
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
        "projector:load" | "projector:loadMany" => success(json!([])),
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

/// The Convex model's starting point; the single flags override it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ModelPreset {
    /// Answer everything at once (the null sink as it always was).
    #[default]
    Immediate,
    /// A Free/Starter deployment: 16 concurrent mutations, 4 MiB/s of
    /// writes, 20 ms + 20 µs per document (see `ConvexModel::starter`).
    Starter,
}

/// `projector null-sink` (hidden): serve until SIGINT/SIGTERM.
#[derive(clap::Args, Debug)]
pub(crate) struct NullSinkArgs {
    /// Port to listen on (0 = any free port; the URL is printed).
    #[arg(long, default_value_t = 3210)]
    pub(crate) port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: IpAddr,
    /// Require `Authorization: Convex <key>` (optional).
    #[arg(long, hide_env_values = true)]
    pub(crate) admin_key: Option<String>,
    /// How mutations are answered; the flags below override its values.
    #[arg(long, value_enum, default_value_t = ModelPreset::Immediate, env = "PROJECTOR_NULL_SINK_MODEL")]
    pub(crate) model: ModelPreset,
    /// Milliseconds every mutation takes (decimals allowed).
    #[arg(long, env = "PROJECTOR_NULL_SINK_LATENCY_MS")]
    pub(crate) latency_ms: Option<f64>,
    /// Microseconds each document of an `apply` adds (decimals allowed).
    #[arg(long, env = "PROJECTOR_NULL_SINK_LATENCY_PER_DOC_US")]
    pub(crate) latency_per_doc_us: Option<f64>,
    /// Mutations executing at once (0 = unlimited); past it a mutation
    /// waits up to --queue-timeout-ms, then is refused.
    #[arg(long, env = "PROJECTOR_NULL_SINK_MAX_CONCURRENT_MUTATIONS")]
    pub(crate) max_concurrent_mutations: Option<usize>,
    /// How long a mutation waits for a slot before it is refused.
    #[arg(long, env = "PROJECTOR_NULL_SINK_QUEUE_TIMEOUT_MS")]
    pub(crate) queue_timeout_ms: Option<u64>,
    /// HTTP status of that refusal (Convex answers 429).
    #[arg(long, env = "PROJECTOR_NULL_SINK_OVERLOAD_STATUS")]
    pub(crate) overload_status: Option<u16>,
    /// `apply` body bytes committed per second before 429 TooManyWrites
    /// (0 = unlimited).
    #[arg(long, env = "PROJECTOR_NULL_SINK_WRITE_BYTES_PER_SEC")]
    pub(crate) write_bytes_per_sec: Option<u64>,
    /// Probability that an `apply` ends in a 503 OCC conflict (0 to 1).
    #[arg(long, env = "PROJECTOR_NULL_SINK_OCC_RATE")]
    pub(crate) occ_rate: Option<f64>,
    /// Seed of the OCC draws.
    #[arg(long, env = "PROJECTOR_NULL_SINK_SEED")]
    pub(crate) seed: Option<u64>,
}

impl NullSinkArgs {
    /// The preset with every flag given applied over it.
    pub(crate) fn model(&self) -> Result<ConvexModel, String> {
        let mut m = match self.model {
            ModelPreset::Immediate => ConvexModel::immediate(),
            ModelPreset::Starter => ConvexModel::starter(),
        };
        let secs = |flag: &str, v: f64| {
            Duration::try_from_secs_f64(v).map_err(|e| format!("{flag} {v}: {e}"))
        };
        if let Some(ms) = self.latency_ms {
            m.base_latency = secs("--latency-ms", ms / 1e3)?;
        }
        if let Some(us) = self.latency_per_doc_us {
            m.per_doc_latency = secs("--latency-per-doc-us", us / 1e6)?;
        }
        if let Some(n) = self.max_concurrent_mutations {
            m.max_concurrent = (n > 0).then_some(n);
        }
        if let Some(ms) = self.queue_timeout_ms {
            m.queue_timeout = Duration::from_millis(ms);
        }
        if let Some(code) = self.overload_status {
            m.overload_status =
                StatusCode::from_u16(code).map_err(|e| format!("--overload-status {code}: {e}"))?;
        }
        if let Some(b) = self.write_bytes_per_sec {
            m.write_bytes_per_window = (b > 0).then_some(b);
        }
        if let Some(p) = self.occ_rate {
            m.occ_rate = p;
        }
        if let Some(seed) = self.seed {
            m.seed = seed;
        }
        m.validate()?;
        Ok(m)
    }
}

pub(crate) async fn main(args: NullSinkArgs) -> anyhow::Result<ExitCode> {
    let model = args.model().map_err(|e| anyhow::anyhow!(e))?;
    let key = args.admin_key.clone().map(Secret::new);
    let sink = NullSink::start_with_model(
        SocketAddr::new(args.host, args.port),
        key.as_ref(),
        model.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    // The first line is the URL (tests and scripts read it).
    println!("null sink listening on {}", sink.url());
    if model != ConvexModel::immediate() {
        println!("null sink model: {model:?}");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let stats = sink.stats();
    sink.shutdown().await;
    println!(
        "null sink: {} mutations, {} queries, {} writes, {} dead letters, {} bytes; \
         refused {} (concurrency) + {} (writes), {} OCC conflicts, at most {} at once",
        stats.mutations,
        stats.queries,
        stats.writes,
        stats.dead_letters,
        stats.bytes,
        stats.rejected_concurrency,
        stats.rejected_writes,
        stats.occ_conflicts,
        stats.max_in_flight
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_model_answers_at_once() {
        assert!(ModelState::new(ConvexModel::default()).is_immediate());
        assert!(!ModelState::new(ConvexModel::starter()).is_immediate());
    }

    #[test]
    fn latency_is_base_plus_per_document() {
        let m = ConvexModel::starter();
        assert_eq!(m.latency(0), STARTER_BASE_LATENCY);
        assert_eq!(
            m.latency(100),
            STARTER_BASE_LATENCY + STARTER_PER_DOC_LATENCY * 100
        );
    }

    #[test]
    fn the_write_window_admits_until_its_commits_reach_the_budget() {
        let s = ModelState::new(ConvexModel {
            write_bytes_per_window: Some(100),
            ..ConvexModel::immediate()
        });
        assert!(s.writes_admitted());
        // The request itself is not counted: one commit may take it over.
        s.commit(150);
        assert!(!s.writes_admitted());
        // Commits older than the window no longer count.
        let later = Instant::now() + WRITE_WINDOW;
        assert_eq!(s.window_bytes(later), 0);
    }

    #[test]
    fn occ_draws_repeat_for_a_seed() {
        let draws = |seed| {
            let s = ModelState::new(ConvexModel {
                occ_rate: 0.3,
                seed,
                ..ConvexModel::immediate()
            });
            (0..64).map(|_| s.occ()).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        let hits = draws(7).iter().filter(|&&b| b).count();
        assert!((5..40).contains(&hits), "{hits} of 64 at p = 0.3");
    }

    #[test]
    fn the_model_refuses_impossible_values() {
        let bad = |m: ConvexModel| m.validate().is_err();
        assert!(bad(ConvexModel {
            occ_rate: 1.5,
            ..ConvexModel::immediate()
        }));
        assert!(bad(ConvexModel {
            max_concurrent: Some(0),
            ..ConvexModel::immediate()
        }));
        assert!(bad(ConvexModel {
            overload_status: StatusCode::OK,
            ..ConvexModel::immediate()
        }));
        assert!(ConvexModel::starter().validate().is_ok());
    }
}
