//! `Tuning::validate` refuses each nonsense value with the fix, and
//! `TuningArgs::resolve` layers flags over the file over the defaults.

use super::*;

/// The error `validate` gives for the default tuning changed by `f`.
fn refused(f: impl FnOnce(&mut Tuning)) -> String {
    let mut t = Tuning::default();
    f(&mut t);
    t.validate().expect_err("should be refused").to_string()
}

fn accepted(f: impl FnOnce(&mut Tuning)) {
    let mut t = Tuning::default();
    f(&mut t);
    t.validate().unwrap();
}

#[test]
fn the_defaults_are_valid_and_are_what_resolve_gives_without_settings() {
    Tuning::default().validate().unwrap();
    let none = TuningArgs::default();
    assert_eq!(
        TuningArgs::resolve(&Layers::new(&none, &none)),
        Tuning::default()
    );
}

#[test]
fn a_flag_beats_the_file_and_the_file_beats_the_default() {
    let flags = TuningArgs {
        batch_max_events: Some(7),
        ..Default::default()
    };
    let file = TuningArgs {
        batch_max_events: Some(9),
        status_interval_ms: Some(250),
        ..Default::default()
    };
    let t = TuningArgs::resolve(&Layers::new(&flags, &file));
    assert_eq!(t.batch_max_events, 7);
    assert_eq!(t.status_interval, Duration::from_millis(250));
    assert_eq!(t.cache_bytes, DEFAULT_CACHE_BYTES);
}

#[test]
fn zero_batch_limits_are_refused() {
    let e = refused(|t| t.batch_max_events = 0);
    assert!(
        e.contains("--batch-max-events") && e.contains("at least 1"),
        "{e}"
    );
    let e = refused(|t| t.batch_max_bytes = 0);
    assert!(
        e.contains("--batch-max-bytes") && e.contains("at least 1"),
        "{e}"
    );
    let e = refused(|t| t.max_inflight_batches = 0);
    assert!(
        e.contains("--max-inflight-batches") && e.contains("never send"),
        "{e}"
    );
    let e = refused(|t| t.cache_bytes = 0);
    assert!(
        e.contains("--cache-bytes") && e.contains("at least 1"),
        "{e}"
    );
}

#[test]
fn a_batch_over_half_of_convexs_argument_limit_is_refused() {
    accepted(|t| {
        t.batch_max_bytes = MAX_BATCH_MAX_BYTES;
        t.inflight_bytes = MAX_BATCH_MAX_BYTES;
    });
    let e = refused(|t| {
        t.batch_max_bytes = MAX_BATCH_MAX_BYTES + 1;
        t.inflight_bytes = usize::MAX;
    });
    assert!(
        e.contains("--batch-max-bytes") && e.contains("at most 8388608"),
        "{e}"
    );
}

#[test]
fn an_inflight_budget_smaller_than_one_batch_is_refused() {
    accepted(|t| t.inflight_bytes = t.batch_max_bytes);
    let e = refused(|t| t.inflight_bytes = t.batch_max_bytes - 1);
    assert!(
        e.contains("--inflight-bytes") && e.contains("set at least 2097152"),
        "{e}"
    );
}

#[test]
fn a_zero_status_interval_is_refused_before_tokio_would_panic() {
    let e = refused(|t| t.status_interval = Duration::ZERO);
    assert!(
        e.contains("--status-interval-ms") && e.contains("set 1 to 30000"),
        "{e}"
    );
    // What the refusal prevents: tokio's interval panics on a zero period.
    let panic = std::panic::catch_unwind(|| tokio::time::interval(Duration::ZERO))
        .expect_err("tokio accepted a zero period");
    let message = (panic.downcast_ref::<&str>().copied())
        .or(panic.downcast_ref::<String>().map(String::as_str));
    assert!(
        message.is_some_and(|m| m.contains("non-zero")),
        "{message:?}"
    );
}

#[test]
fn a_status_interval_near_wal_sender_timeout_is_refused() {
    accepted(|t| t.status_interval = MAX_STATUS_INTERVAL);
    for s in [31, 60, 3600] {
        let e = refused(|t| t.status_interval = Duration::from_secs(s));
        assert!(
            e.contains("wal_sender_timeout") && e.contains("set 1 to 30000"),
            "{e}"
        );
    }
}

#[test]
fn a_convex_timeout_under_a_mutations_run_time_is_refused() {
    accepted(|t| t.convex_timeout = MIN_CONVEX_TIMEOUT);
    for ms in [0, 1, 999] {
        let e = refused(|t| t.convex_timeout = Duration::from_millis(ms));
        assert!(
            e.contains("--convex-timeout-ms") && e.contains("set at least 1000"),
            "{e}"
        );
    }
}

#[test]
fn a_zero_fill_is_a_latency_choice_not_an_error() {
    accepted(|t| t.batch_fill = Duration::ZERO);
}

#[test]
fn a_max_event_size_below_the_kept_prefix_is_refused() {
    let e = refused(|t| t.max_event_bytes = 1000);
    assert!(
        e.contains("--max-event-bytes") && e.contains(&format!("at least {MIN_MAX_EVENT_BYTES}")),
        "{e}"
    );
    assert!(Tuning {
        max_event_bytes: MIN_MAX_EVENT_BYTES,
        ..Tuning::default()
    }
    .validate()
    .is_ok());
}
