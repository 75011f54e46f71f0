//! `projector demo`: the whole pipeline on this machine.
//!
//! ```text
//!  throwaway Postgres (sql/ applied, publication, slot)
//!     │ loadgen writers ──INSERT──▶ runtime.events
//!     ▼
//!  projector run (in process) ──▶ local Convex backend (convex/ in convex-test)
//!     │                                   │ WebSocket sync, verified JWTs
//!     │                        live page (web/, official Convex client)
//!     │                        served with its token issuer by `demo-web`
//!  live progress (events/s, lag) ──▶ catch up ──▶ verify ──▶ summary
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{CommonArgs, ConvexArgs, MetricsArgs, SourceArgs};
use crate::metrics::{Health, Metrics};
use crate::sandbox::convex::{repo_root, LocalConvex};
use crate::sandbox::postgres::LocalPostgres;
use crate::sandbox::web::DemoWeb;
use crate::sink::ConvexClient;

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Events of generated traffic.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) events: u64,
    /// Target rate, events per second.
    #[arg(long, default_value_t = 2_000)]
    pub(crate) rate: u64,
    /// Concurrent writer connections.
    #[arg(long, default_value_t = 4)]
    pub(crate) writers: usize,
    /// Fraction of malformed events (they become dead letters or are ignored).
    #[arg(long, default_value_t = 0.01)]
    pub(crate) malformed_fraction: f64,
    /// Where /metrics, /healthz and /readyz listen during the demo.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) metrics_addr: String,
    /// The user whose read model the live page shows (loadgen users are u0, u1, …).
    #[arg(long, default_value = "u1")]
    pub(crate) page_user: String,
    /// After the summary, keep the backend and the live page up until Ctrl-C.
    #[arg(long)]
    pub(crate) hold: bool,
}

pub(crate) async fn main(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let infra = Infra::start(&args.page_user).await?;
    let settings = settings(&infra, &args)?;
    let metrics = Metrics::new()?;
    let health = Health::new(crate::pipeline::service::WEDGED_AFTER);
    let (addr, _server) =
        crate::metrics::serve(settings.metrics_addr, metrics.clone(), health.clone()).await?;
    eprintln!("demo: metrics on http://{addr}/metrics");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let service = {
        let settings = settings.clone();
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            crate::pipeline::service::run_service(
                &settings,
                crate::pipeline::service::ServiceOptions::default(),
                metrics,
                health,
                stop_rx,
            )
            .await
        })
    };

    // Traffic starts once the service streams, so every event takes the
    // WAL path the demo is about (not the first start's history copy).
    let streaming_by = Instant::now() + Duration::from_secs(60);
    while !health.is_streaming() && !service.is_finished() && Instant::now() < streaming_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let bar = progress(args.events);
    let report = generate_traffic(&infra.db.url, &args, &metrics, &bar).await?;
    eprintln!(
        "demo: loadgen wrote {} events in {:.1} s; waiting for the projector to catch up...",
        report.total,
        report.elapsed.as_secs_f64()
    );

    let (url, key) = settings.convex()?;
    let client = ConvexClient::new(url, key.clone(), settings.tuning.convex_timeout)?;
    let generation = client
        .get_active()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the projector never created a generation"))?;
    let outcome = crate::verify::verify(
        &infra.db.url,
        Some(&settings.slot),
        &client,
        generation,
        Duration::from_secs(120),
    )
    .await?;
    bar.set_position(metrics.events_decoded_total.get().min(args.events));
    bar.finish_and_clear();
    let _ = stop_tx.send(true);
    let _ = service.await;

    let code = summarise(&outcome, &report, &metrics, started);
    if args.hold {
        println!(
            "demo: the live page stays up at {} (Ctrl-C to stop)",
            infra.page
        );
        tokio::signal::ctrl_c().await?;
    }
    Ok(code)
}

/// The demo's throwaway parts, stopped and removed on drop: PostgreSQL
/// with the schema and the slot, the app backend (token issuer and live
/// page) and the local Convex backend. Fields drop in order: the backends
/// before the database they were started on.
struct Infra {
    convex: LocalConvex,
    _web: DemoWeb,
    db: crate::sandbox::postgres::LocalDb,
    _pg: LocalPostgres,
    page: String,
}

impl Infra {
    async fn start(page_user: &str) -> anyhow::Result<Infra> {
        eprintln!("demo: starting a throwaway PostgreSQL cluster (wal_level=logical)...");
        let pg = LocalPostgres::start().await?;
        let db = pg.create_database("projector_demo").await?;
        // The schema file creates the publication; the slot is ours to make.
        let sql = crate::source::sql::connect(&db.url).await?;
        crate::source::slot::create_slot(&sql, crate::config::DEFAULT_SLOT).await?;
        eprintln!("demo: starting the demo app backend (token issuer and live page)...");
        let web = DemoWeb::start(&repo_root()).await?;
        eprintln!("demo: starting the local Convex backend (convex/ functions in convex-test)...");
        let convex = LocalConvex::start_with_env(&repo_root(), &web.jwt_env).await?;
        let page = web.page_url(&convex.url, page_user)?;
        let token = web.token(page_user).await?;
        println!("demo: live page for {page_user}: {page}");
        println!("demo: a token for {page_user} (RS256, 10 min; Authorization: Bearer …): {token}");
        Ok(Infra {
            convex,
            _web: web,
            db,
            _pg: pg,
            page,
        })
    }
}

/// The service's settings against the demo's parts.
fn settings(infra: &Infra, args: &DemoArgs) -> anyhow::Result<crate::config::Settings> {
    let common = CommonArgs {
        source: SourceArgs {
            database_url: Some(infra.db.url.clone()),
            ..Default::default()
        },
        convex: ConvexArgs {
            convex_url: Some(infra.convex.url.clone()),
            convex_admin_key: Some(infra.convex.admin_key.clone()),
        },
        metrics: MetricsArgs {
            metrics_addr: Some(args.metrics_addr.clone()),
        },
        ..Default::default()
    };
    Ok(common.resolve()?)
}

/// Runs loadgen to completion, showing progress (a bar on a terminal, a
/// log line a second otherwise).
async fn generate_traffic(
    db_url: &crate::config::Secret,
    args: &DemoArgs,
    metrics: &Metrics,
    bar: &ProgressBar,
) -> anyhow::Result<crate::loadgen::LoadReport> {
    let spec = crate::loadgen::LoadSpec {
        events: Some(args.events),
        rate: args.rate as f64,
        writers: args.writers,
        malformed_fraction: args.malformed_fraction,
        ..crate::loadgen::LoadSpec::default()
    };
    let load = {
        let url = db_url.clone();
        tokio::spawn(async move { crate::loadgen::generate(&url, spec).await })
    };
    let mut last = (Instant::now(), 0u64);
    let mut rate = 0.0;
    while !load.is_finished() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let decoded = metrics.events_decoded_total.get();
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64();
        if dt >= 1.0 {
            rate = (decoded - last.1) as f64 / dt;
            last = (now, decoded);
        }
        if bar.is_hidden() && dt >= 1.0 {
            tracing::info!(
                decoded,
                events_per_s = rate as u64,
                lag_bytes = metrics.lag_bytes.get(),
                "demo progress"
            );
        }
        bar.set_position(decoded.min(args.events));
        bar.set_message(format!(
            "{rate:>6.0} events/s  lag {} bytes  {} dead letters",
            metrics.lag_bytes.get(),
            metrics.dead_letters_written_total.get()
        ));
    }
    load.await?
}

/// Prints the verify report and the counts; success when Convex equals a
/// fresh fold and the slot caught up.
fn summarise(
    outcome: &crate::verify::Outcome,
    report: &crate::loadgen::LoadReport,
    metrics: &Metrics,
    started: Instant,
) -> ExitCode {
    print!("{}", crate::verify::compare::render(&outcome.report));
    let ignored = metrics
        .events_ignored_total
        .with_label_values(&["unknown_type"])
        .get()
        + metrics
            .events_ignored_total
            .with_label_values(&["prefix_mismatch"])
            .get();
    println!(
        "demo: {} events written ({} malformed), {} decoded, {} folded, {} dead letters, {} ignored; {:.1} s in all",
        report.total,
        report.dead_letters + report.ignored,
        metrics.events_decoded_total.get(),
        metrics.events_folded_total.get(),
        metrics.dead_letters_written_total.get(),
        ignored,
        started.elapsed().as_secs_f64()
    );
    if outcome.report.is_exact() && outcome.caught_up {
        println!("demo: OK — Convex equals a fresh fold of runtime.events");
        ExitCode::SUCCESS
    } else {
        println!("demo: FAILED — see the differences above");
        ExitCode::from(1)
    }
}

fn progress(total: u64) -> ProgressBar {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{spinner} projected [{bar:30}] {pos}/{len}  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    }
}
