//! Test harnesses shared by every test module.

pub mod cli;
pub mod convex_backend;
pub mod history_sql;
pub mod pg;
pub mod pg_standby;
pub mod projector_proc;
pub mod tcp_proxy;
pub mod wire_fixture;

/// The seed of a test's randomness: `PROJECTOR_TEST_SEED` when set, else
/// random. Printed (libtest shows it when the test fails), so a failing run
/// replays with `PROJECTOR_TEST_SEED=<seed> cargo test --test main <test>`.
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("PROJECTOR_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: PROJECTOR_TEST_SEED={seed}");
    seed
}

/// A random generator for a test's fault timings, from [`test_seed`].
pub fn seeded_rng(test: &str) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    rand::rngs::StdRng::seed_from_u64(test_seed(test))
}

/// A proptest configuration of `cases` cases whose generator starts from
/// [`test_seed`] (proptest's own default is an unprinted random seed).
/// Evaluated once per property, so each prints its seed.
pub fn proptest_config(test: &str, cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(test_seed(test)),
        ..proptest::test_runner::Config::default()
    }
}

/// Polls `cond` every 50 ms until it holds. Panics after `timeout`, naming
/// what was awaited: tests wait on the condition they need, never on a
/// guessed delay.
pub async fn wait_until<F, Fut>(what: &str, timeout: std::time::Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while !cond().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `v` with every number as a float64: Convex stores JSON numbers as
/// float64 and prints them so (`4` comes back as `4.0`).
pub fn as_float64(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Value::Array(a) => Value::Array(a.iter().map(as_float64).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), as_float64(v))).collect())
        }
        other => other.clone(),
    }
}
