//! The admin key never leaves the process except in the Authorization
//! header: not in logs at `trace` level (our own, reqwest's, hyper's), not
//! in error texts, not in `Debug` output — even when a hostile server
//! echoes the header back in its error messages.

use crate::support::wire_fixture;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use projector::config::Secret;
use projector::sink::{
    with_retry, ApplyRequest, ConvexClient, NullSink, RetryPolicy, SinkError, Write,
};
use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;
use wire_fixture::{Reply, WireFixture};

const KEY: &str = "prod-admin|0123456789abcdefSECRETKEYMATERIAL";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Buffer {
        self.clone()
    }
}

fn req() -> ApplyRequest {
    ApplyRequest {
        generation: 1,
        epoch: None,
        writes: vec![Write {
            table: "runs".into(),
            key: "r1".into(),
            position: "0000000000000001:0000000000000000".into(),
            doc: json!({"runId": "r1"}),
        }],
        dead_letters: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_key_never_appears_in_logs_errors_or_debug() {
    let buf = Buffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(buf.clone())
        .with_ansi(false)
        .finish();
    // try_init also routes the `log` crate (which reqwest and hyper-util
    // use) into the subscriber.
    tracing_subscriber::util::SubscriberInitExt::try_init(subscriber).unwrap();
    let key = Secret::new(KEY);
    let mut texts: Vec<String> = Vec::new();

    // Success through the real client against a key-checking null sink.
    let sink = NullSink::start("127.0.0.1:0".parse().unwrap(), Some(&key))
        .await
        .unwrap();
    let c = ConvexClient::new(&sink.url(), key.clone(), Duration::from_millis(400)).unwrap();
    texts.push(format!("{c:?}"));
    assert_eq!(c.apply(&req()).await.unwrap().applied, 1);

    // A hostile server echoing the Authorization header in every error.
    let f = WireFixture::start().await;
    let c = ConvexClient::new(&f.url(), key.clone(), Duration::from_millis(400)).unwrap();
    f.push(Reply::Raw {
        status: 500,
        headers: vec![],
        body: r#"{"code":"InternalServerError","message":"bad header {auth}"}"#.into(),
    });
    f.push(Reply::Raw {
        status: 401,
        headers: vec![],
        body: r#"{"code":"BadAdminKey","message":"key {auth} is invalid"}"#.into(),
    });
    f.push(Reply::Raw {
        status: 200,
        headers: vec![],
        body: r#"{"status":"error","errorMessage":"Uncaught: {auth}"}"#.into(),
    });
    f.push(Reply::Raw {
        status: 200,
        headers: vec![],
        body: "garbage {auth}".into(),
    });
    f.push(Reply::Raw {
        status: 403,
        headers: vec![],
        body: "plain {auth}".into(),
    });
    f.push(Reply::Drop);
    f.push(Reply::Delay(
        Duration::from_millis(800),
        Box::new(Reply::Success("null".into())),
    ));
    let mut errors: Vec<SinkError> = Vec::new();
    for _ in 0..7 {
        errors.push(c.apply(&req()).await.unwrap_err());
    }
    // The echo really happened: the scrubbed message shows the redaction.
    assert!(
        errors[0]
            .to_string()
            .contains("bad header Convex <redacted>"),
        "{}",
        errors[0]
    );
    assert!(
        errors[2]
            .to_string()
            .contains("Uncaught: Convex <redacted>"),
        "{}",
        errors[2]
    );

    // Retries log each failure at warn.
    f.push(Reply::Raw {
        status: 503,
        headers: vec![],
        body: r#"{"code":"Overloaded","message":"{auth}"}"#.into(),
    });
    f.push(Reply::Success(
        r#"{"applied":1,"skipped":0,"deadLettersInserted":0,"deadLettersSkipped":0}"#.into(),
    ));
    let policy =
        RetryPolicy::forever().with_delays(Duration::from_millis(1), Duration::from_millis(2));
    let r = req();
    with_retry(&policy, "apply", || c.apply(&r)).await.unwrap();

    // Connect failure.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let c2 = ConvexClient::new(
        &format!("http://{closed}"),
        key.clone(),
        Duration::from_millis(400),
    )
    .unwrap();
    errors.push(c2.get_active().await.unwrap_err());

    for e in &errors {
        texts.push(e.to_string());
        texts.push(format!("{e:?}"));
    }
    texts.push(format!("{key:?} {key}"));

    let logs = String::from_utf8_lossy(&buf.0.lock().unwrap()).to_string();
    // The capture works and includes the HTTP stack's own trace output.
    assert!(logs.contains("TRACE"), "no trace-level output captured");
    assert!(
        logs.contains("TRACE hyper_util") && logs.contains("reqwest::"),
        "no HTTP-stack logs captured"
    );
    assert!(logs.contains("transient Convex failure; retrying"));
    let _ =
        std::io::stderr().write_all(format!("captured {} bytes of logs\n", logs.len()).as_bytes());
    if std::env::var_os("SHOW_LOGS").is_some() {
        let _ = std::io::stderr().write_all(logs.as_bytes());
    }

    let needle = "SECRETKEYMATERIAL";
    assert!(!logs.contains(needle), "admin key in logs");
    for t in &texts {
        assert!(!t.contains(needle), "admin key in: {t}");
    }
}
