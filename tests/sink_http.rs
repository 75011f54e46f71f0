//! The client's classification over real HTTP, and `with_retry` on top:
//! every transport failure is transient and retried, every definite
//! answer is returned at once with the server's message.

use crate::support::wire_fixture;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use projector::config::Secret;
use projector::sink::{with_retry, ConvexClient, RetryPolicy, SinkError};
use serde_json::{json, Value};
use wire_fixture::{Reply, WireFixture};

fn client(url: &str, timeout_ms: u64) -> ConvexClient {
    ConvexClient::new(
        url,
        Secret::new("test-admin-key"),
        Duration::from_millis(timeout_ms),
    )
    .unwrap()
}

fn raw(status: u16, body: &str) -> Reply {
    Reply::Raw {
        status,
        headers: vec![],
        body: body.into(),
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy::forever().with_delays(Duration::from_millis(5), Duration::from_millis(20))
}

#[tokio::test]
async fn classifies_every_answer() {
    let f = WireFixture::start().await;
    let c = client(&f.url(), 500);
    let q = || c.query::<Value>("projector:getActive", json!({}));

    f.push(Reply::Success("7".into()));
    assert_eq!(q().await.unwrap(), json!(7));

    f.push(raw(
        200,
        r#"{"status":"error","errorMessage":"Uncaught Error: boom","errorData":{"k":1}}"#,
    ));
    match q().await.unwrap_err() {
        SinkError::Function { message, data, .. } => {
            assert_eq!(message, "Uncaught Error: boom");
            assert_eq!(data, Some(json!({"k": 1})));
        }
        e => panic!("{e:?}"),
    }

    f.push(Reply::Raw {
        status: 429,
        headers: vec![("retry-after".into(), "2".into())],
        body: r#"{"code":"RateLimited","message":"too fast"}"#.into(),
    });
    let e = q().await.unwrap_err();
    assert!(e.is_transient() && e.class() == "rate_limited", "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));

    for s in [500, 502, 503] {
        f.push(raw(s, r#"{"code":"Overloaded","message":"busy"}"#));
        let e = q().await.unwrap_err();
        assert!(e.is_transient() && e.class() == "server", "{e:?}");
        assert_eq!(e.convex_message(), Some("busy"));
    }
    for s in [400, 401, 403, 404] {
        f.push(raw(s, r#"{"code":"BadRequest","message":"nope"}"#));
        let e = q().await.unwrap_err();
        assert!(!e.is_transient() && e.class() == "rejected", "{e:?}");
    }

    f.push(raw(200, "<html>proxy</html>"));
    let e = q().await.unwrap_err();
    assert!(!e.is_transient() && e.class() == "protocol", "{e:?}");

    f.push(Reply::Drop);
    let e = q().await.unwrap_err();
    assert!(e.is_transient() && e.class() == "network", "{e:?}");

    f.push(Reply::Delay(
        Duration::from_millis(1500),
        Box::new(Reply::Success("1".into())),
    ));
    let started = Instant::now();
    let e = q().await.unwrap_err();
    assert!(e.is_transient() && e.class() == "timeout", "{e:?}");
    assert!(started.elapsed() < Duration::from_millis(1400));

    // A closed port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let e = client(&format!("http://{closed}"), 500)
        .get_active()
        .await
        .unwrap_err();
    assert!(e.is_transient() && e.class() == "connect", "{e:?}");
    assert!(e.to_string().contains("CONVEX_URL"), "{e}");
}

#[tokio::test]
async fn with_retry_rides_out_transient_failures() {
    let f = WireFixture::start().await;
    let c = client(&f.url(), 300);
    f.push(raw(503, r#"{"code":"Overloaded","message":"busy"}"#));
    f.push(Reply::Drop);
    f.push(Reply::Delay(
        Duration::from_millis(800),
        Box::new(Reply::Success("1".into())),
    ));
    f.push(Reply::Raw {
        status: 429,
        headers: vec![("Retry-After".into(), "1".into())],
        body: r#"{"code":"RateLimited","message":"x"}"#.into(),
    });
    f.push(raw(500, r#"{"code":"InternalServerError","message":"x"}"#));
    f.push(Reply::Success("3".into()));
    let retries = Arc::new(AtomicU32::new(0));
    let r2 = retries.clone();
    let policy = fast().with_hook(Arc::new(move |_, _, _| {
        r2.fetch_add(1, Ordering::Relaxed);
    }));
    let started = Instant::now();
    let v = with_retry(&policy, "getActive", || c.get_active())
        .await
        .unwrap();
    assert_eq!(v, Some(3));
    assert_eq!(retries.load(Ordering::Relaxed), 5);
    // Retry-After: 1 was honoured although the backoff cap is 20 ms.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // A definite answer is returned after one attempt.
    let before = f.request_count();
    f.push(raw(
        200,
        r#"{"status":"error","errorMessage":"Validator error: bad"}"#,
    ));
    let e = with_retry(&policy, "getActive", || c.get_active())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Validator error: bad"), "{e}");
    assert_eq!(f.request_count(), before + 1);

    // Bounded policies give up with the last transient error.
    for _ in 0..3 {
        f.push(raw(503, r#"{"code":"Overloaded","message":"busy"}"#));
    }
    let policy = RetryPolicy {
        max_retries: Some(2),
        ..fast()
    };
    let e = with_retry(&policy, "getActive", || c.get_active())
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
}

#[tokio::test]
async fn bad_configuration_is_reported_without_the_key() {
    let key = Secret::new("super-secret-key-value");
    for url in ["not a url", "ftp://x", "https://user:pw@x.convex.cloud"] {
        let e = ConvexClient::new(url, key.clone(), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, SinkError::Config(_)), "{e:?}");
        assert!(!format!("{e} {e:?}").contains("super-secret"));
    }
    let e = ConvexClient::new(
        "https://x.convex.cloud",
        Secret::new(""),
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(e.to_string().contains("CONVEX_ADMIN_KEY"), "{e}");
    let e = ConvexClient::new(
        "https://x.convex.cloud",
        Secret::new("bad\nkey"),
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(!e.to_string().contains("bad\nkey"));
    let c = ConvexClient::new("https://x.convex.cloud/", key, Duration::from_secs(1)).unwrap();
    assert_eq!(c.url(), "https://x.convex.cloud");
    assert!(!format!("{c:?}").contains("super-secret"));
}

/// `run` against functions of another schema version (a deploy rolled out
/// one side only) stands by instead of streaming or crash-looping: not
/// ready, /readyz and the log say which versions and what to deploy, and
/// `projector_convex_schema_skew` is 1 for the alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_holds_on_deployment_skew() {
    let f = WireFixture::start().await;
    // Functions one version behind this binary (binary deployed first).
    let behind = projector::sink::schema::SCHEMA_VERSION - 1;
    f.push(Reply::Success(behind.to_string()));
    let mut p = crate::support::projector_proc::Projector::spawn(
        "postgres://projector@127.0.0.1:1/app",
        &f.url(),
        "test-admin-key",
        "projector",
        &[],
    );
    let m = p
        .wait_metric(
            "projector_convex_schema_skew",
            |v| v == 1.0,
            Duration::from_secs(30),
        )
        .await;
    assert!(m.contains("projector_ready 0"), "{m}");
    let body = reqwest::get(format!("http://127.0.0.1:{}/readyz", p.metrics_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains(&format!("schema version {behind}")) && body.contains("npx convex deploy"),
        "{body}"
    );
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "run exited:\n{}",
        p.stderr()
    );
    let requests = f.requests.lock().unwrap().clone();
    assert!(
        requests.iter().all(|r| !r.contains("projector:apply")),
        "{requests:?}"
    );
    p.kill9();
    let _ = p.wait().await;
}
