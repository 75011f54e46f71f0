//! `projector loadgen`: realistic runtime traffic into `runtime.events`.
//!
//! ```text
//! LoadSpec ─▶ generate ─┬─ writer 0: Traffic(share 0) ─▶ batched INSERTs ─┐
//!                       ├─ writer 1: Traffic(share 1) ─▶ batched INSERTs ─┼─▶ LoadReport
//!                       └─ …                                              ┘
//! ```
//!
//! Each writer is one connection and the single writer of a disjoint set of
//! streams ([`traffic`]), so every stream is numbered `1, 2, 3, …` without
//! gaps or conflicts. A fraction of events can be malformed in every way §2
//! describes ([`malformed`]). The library entry point is [`generate`]; the
//! subcommand is [`main`].

pub(crate) mod malformed;
pub(crate) mod traffic;
pub(crate) mod writer;

use std::collections::BTreeMap;
use std::fmt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{redact_url, CommonArgs, Secret};

pub use malformed::MalformedKind;
pub use traffic::Mix;

/// Opens an ordinary SQL connection (the one place loadgen connects; to be
/// switched to `crate::source::sql::connect` for TLS).
pub(crate) async fn connect_sql(url: &Secret) -> anyhow::Result<tokio_postgres::Client> {
    // Same TLS rules (sslmode, sslrootcert) as the rest of the projector.
    crate::source::sql::connect(url)
        .await
        .with_context(|| format!("connecting to {}", redact_url(url.expose())))
}

/// What to generate. `Default` is a sensible small load; set at least one
/// of `events`, `duration`, `stop` or it runs forever.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Events per second over all writers; 0 = as fast as possible.
    pub rate: f64,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many events in total (split evenly over writers).
    pub events: Option<u64>,
    /// Concurrent writer connections.
    pub writers: usize,
    /// Live runs kept at once (finished ones are replaced by new ones).
    pub runs: usize,
    /// Live workers kept at once.
    pub workers: usize,
    /// Users: owners of runs/workers and the notification streams `user:u<k>`.
    pub users: usize,
    pub mix: Mix,
    /// Approximate padding bytes per payload (`detail` key, ignored by reducers).
    pub payload_bytes: usize,
    /// Fraction of events that are malformed (cycling through every kind).
    pub malformed_fraction: f64,
    /// Rows per INSERT (one statement, one transaction).
    pub batch: usize,
    pub seed: u64,
    /// Prefix of run/worker/notification ids; None = derived from the clock,
    /// so repeated invocations never collide.
    pub id_prefix: Option<String>,
    /// Stop when this becomes `true`.
    pub stop: Option<watch::Receiver<bool>>,
    /// Interval of progress log lines.
    pub progress_every: Duration,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            rate: 0.0,
            duration: None,
            events: None,
            writers: 4,
            runs: 200,
            workers: 50,
            users: 100,
            mix: Mix::default(),
            payload_bytes: DEFAULT_PAYLOAD_BYTES,
            malformed_fraction: 0.0,
            batch: 50,
            seed: 0,
            id_prefix: None,
            stop: None,
            progress_every: Duration::from_secs(5),
        }
    }
}

/// Padding that makes a typical payload about 200 bytes of JSON.
pub(crate) const DEFAULT_PAYLOAD_BYTES: usize = 150;

/// What was written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Rows inserted (valid + malformed).
    pub total: u64,
    /// Well-formed events by event type.
    pub by_type: BTreeMap<String, u64>,
    /// Malformed events by kind (dead-letter and ignored kinds).
    pub malformed: BTreeMap<MalformedKind, u64>,
    /// Malformed events the projector must dead-letter.
    pub dead_letters: u64,
    /// Malformed events the projector must ignore (unknown type, prefix mismatch).
    pub ignored: u64,
    /// Distinct streams written (summed over writers; writers never share one).
    pub streams: u64,
    /// INSERT statements (transactions).
    pub(crate) batches: u64,
    pub elapsed: Duration,
}

impl LoadReport {
    /// Achieved events per second.
    pub(crate) fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.total as f64 / s
        } else {
            0.0
        }
    }

    /// Well-formed events (what the projector folds).
    pub fn valid(&self) -> u64 {
        self.by_type.values().sum()
    }

    fn merge(&mut self, other: LoadReport) {
        self.total += other.total;
        for (k, v) in other.by_type {
            *self.by_type.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.malformed {
            *self.malformed.entry(k).or_insert(0) += v;
        }
        self.dead_letters += other.dead_letters;
        self.ignored += other.ignored;
        self.streams += other.streams;
        self.batches += other.batches;
    }
}

impl fmt::Display for LoadReport {
    /// One line: totals, rate, then per-kind counts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loadgen: wrote {} events ({} streams, {} batches) in {:.2}s = {:.0} events/s; dead letters {}, ignored {}",
            self.total,
            self.streams,
            self.batches,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.dead_letters,
            self.ignored
        )?;
        let kinds: Vec<String> = self
            .by_type
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain(
                self.malformed
                    .iter()
                    .map(|(k, v)| format!("malformed.{k}={v}")),
            )
            .collect();
        if !kinds.is_empty() {
            write!(f, "; {}", kinds.join(" "))?;
        }
        Ok(())
    }
}

/// Checks a spec; the error names the flag to fix.
fn validate(spec: &LoadSpec) -> anyhow::Result<()> {
    anyhow::ensure!(spec.writers >= 1, "--writers must be at least 1");
    anyhow::ensure!(spec.batch >= 1, "--batch must be at least 1");
    anyhow::ensure!(
        spec.users >= 1,
        "--users must be at least 1 (users own every stream)"
    );
    anyhow::ensure!(
        spec.rate.is_finite() && spec.rate >= 0.0,
        "--rate must be a number >= 0 (0 = as fast as possible)"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&spec.malformed_fraction),
        "--malformed-fraction must be between 0 and 1"
    );
    let m = spec.mix;
    let possible = (m.run > 0 && spec.runs > 0)
        || (m.worker > 0 && spec.workers > 0)
        || (m.notification > 0 && spec.users > 0);
    anyhow::ensure!(
        possible,
        "nothing to write: every family in --mix with a weight needs a population (--runs, --workers, --users)"
    );
    if let Some(p) = &spec.id_prefix {
        anyhow::ensure!(
            !p.is_empty() && p.len() <= 40,
            "the id prefix must be 1-40 characters"
        );
    }
    Ok(())
}

fn clock_prefix() -> String {
    let ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    // base36 of the clock: short, and distinct per invocation.
    let mut n = ms;
    let mut s = Vec::new();
    while n > 0 {
        let d = (n % 36) as u8;
        s.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        n /= 36;
    }
    s.reverse();
    // Plus a random letter pair: two invocations in the same millisecond differ.
    let r: u16 = rand::random::<u16>() % (26 * 26);
    format!(
        "lg{}{}{}",
        String::from_utf8_lossy(&s),
        char::from(b'a' + (r / 26) as u8),
        char::from(b'a' + (r % 26) as u8)
    )
}

/// Writes the load described by `spec` and reports what was written.
/// Returns when the event count is reached, the duration is over, or
/// `spec.stop` turns `true`; a writer error stops all writers and is returned.
pub async fn generate(url: &Secret, spec: LoadSpec) -> anyhow::Result<LoadReport> {
    validate(&spec)?;
    let prefix = spec.id_prefix.clone().unwrap_or_else(clock_prefix);
    let started = tokio::time::Instant::now();
    let deadline = spec.duration.map(|d| started + d);
    let written = Arc::new(AtomicU64::new(0));
    let writers = spec.writers;
    tracing::info!(
        writers,
        rate = spec.rate,
        events = spec.events,
        duration_s = spec.duration.map(|d| d.as_secs_f64()),
        malformed_fraction = spec.malformed_fraction,
        seed = spec.seed,
        id_prefix = %prefix,
        "loadgen starting"
    );

    let mut set = JoinSet::new();
    for w in 0..writers {
        let traffic = traffic::Traffic::new(traffic::TrafficConfig {
            writer: w,
            writers,
            runs: spec.runs,
            workers: spec.workers,
            users: spec.users,
            mix: spec.mix,
            payload_bytes: spec.payload_bytes,
            malformed_fraction: spec.malformed_fraction,
            id_prefix: prefix.clone(),
            seed: spec.seed,
        });
        let quota = spec
            .events
            .map(|n| n / writers as u64 + u64::from((w as u64) < n % writers as u64));
        set.spawn(writer::run(writer::WriterJob {
            url: url.clone(),
            traffic,
            quota,
            rate: spec.rate / writers as f64,
            batch: spec.batch,
            deadline,
            stop: spec.stop.clone(),
            written: written.clone(),
        }));
    }

    let progress = {
        let written = written.clone();
        let every = spec.progress_every.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            let mut last = 0u64;
            loop {
                tick.tick().await;
                let now = written.load(Ordering::Relaxed);
                tracing::info!(
                    written = now,
                    rate = (now - last) as f64 / every.as_secs_f64(),
                    "loadgen progress"
                );
                last = now;
            }
        })
    };

    let mut report = LoadReport::default();
    let mut failure = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(r)) => report.merge(r),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
                set.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                failure.get_or_insert(anyhow::anyhow!("a loadgen writer panicked: {e}"));
                set.abort_all();
            }
        }
    }
    progress.abort();
    report.elapsed = started.elapsed();
    if let Some(e) = failure {
        return Err(e.context(format!(
            "loadgen stopped after {} events",
            written.load(Ordering::Relaxed)
        )));
    }
    tracing::info!(
        total = report.total,
        dead_letters = report.dead_letters,
        ignored = report.ignored,
        elapsed_s = report.elapsed.as_secs_f64(),
        rate = report.rate(),
        "loadgen done"
    );
    Ok(report)
}

/// Parses a humane duration: `30s`, `5m`, `1h30m`, `250ms`, `1.5s`, or a
/// bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("invalid duration {s:?}: expected e.g. 30s, 5m, 1h30m, 250ms");
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match rest[..unit_len].trim() {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hours" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * factor;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[derive(Args, Debug)]
pub(crate) struct LoadgenArgs {
    #[command(flatten)]
    pub(crate) common: CommonArgs,
    /// Events per second over all writers; 0 = as fast as possible.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) rate: f64,
    /// Stop after this long (e.g. 30s, 5m, 1h30m).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Stop after this many events in total.
    #[arg(long)]
    pub(crate) events: Option<u64>,
    /// Concurrent writer connections (each the single writer of its streams).
    #[arg(long, default_value_t = 4)]
    pub(crate) writers: usize,
    /// Live runs kept at once (finished runs are replaced by new ones).
    #[arg(long, default_value_t = 200)]
    pub(crate) runs: usize,
    /// Live workers kept at once.
    #[arg(long, default_value_t = 50)]
    pub(crate) workers: usize,
    /// Users (owners, and notification streams `user:u0` … `user:u<N-1>`).
    #[arg(long, default_value_t = 100)]
    pub(crate) users: usize,
    /// Weights of the event families, e.g. run=6,worker=3,notification=1.
    #[arg(long, default_value = "run=6,worker=3,notification=1")]
    pub(crate) mix: Mix,
    /// Approximate padding bytes per payload (a `detail` key reducers ignore).
    #[arg(long, default_value_t = DEFAULT_PAYLOAD_BYTES)]
    pub(crate) payload_bytes: usize,
    /// Fraction of malformed events (0..1), cycling through every kind of
    /// design.md §2 (dead letters, plus unknown types and prefix mismatches,
    /// which are ignored).
    #[arg(long, default_value_t = 0.0)]
    pub(crate) malformed_fraction: f64,
    /// Rows per INSERT statement (one transaction).
    #[arg(long, default_value_t = 50)]
    pub(crate) batch: usize,
    /// Random seed (default: from the clock).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
}

pub(crate) async fn main(args: LoadgenArgs) -> anyhow::Result<ExitCode> {
    let settings = args.common.resolve()?;
    let url = settings.database_url()?.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("interrupted: finishing the current batches");
            let _ = stop_tx.send(true);
        }
    });
    let seed = args
        .seed
        .unwrap_or_else(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64);
    let spec = LoadSpec {
        rate: args.rate,
        duration: args.duration,
        events: args.events,
        writers: args.writers,
        runs: args.runs,
        workers: args.workers,
        users: args.users,
        mix: args.mix,
        payload_bytes: args.payload_bytes,
        malformed_fraction: args.malformed_fraction,
        batch: args.batch,
        seed,
        id_prefix: None,
        stop: Some(stop_rx),
        progress_every: Duration::from_secs(5),
    };
    if spec.duration.is_none() && spec.events.is_none() {
        tracing::info!("no --duration or --events: writing until interrupted (Ctrl-C)");
    }
    let report = generate(&url, spec).await?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("12").unwrap(), Duration::from_secs(12));
        for bad in ["", "s", "5x", "-1s", "1h-"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spec_validation_names_the_flag() {
        let e = validate(&LoadSpec {
            writers: 0,
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("--writers"));
        assert!(validate(&LoadSpec::default()).is_ok());
    }

    #[test]
    fn report_line_has_counts() {
        let mut r = LoadReport {
            total: 3,
            elapsed: Duration::from_secs(1),
            ..Default::default()
        };
        r.by_type.insert("run.created".into(), 2);
        r.malformed.insert(MalformedKind::UnknownType, 1);
        let line = r.to_string();
        assert!(line.contains("wrote 3 events"), "{line}");
        assert!(line.contains("run.created=2"), "{line}");
        assert!(line.contains("malformed.unknown_type=1"), "{line}");
        assert_eq!(r.valid(), 2);
    }
}
