//! Starts the real ops server on an ephemeral port and scrapes it.

use std::net::SocketAddr;

use projector::metrics::{names, serve, Health, Metrics, ServeError};

async fn get(addr: SocketAddr, path: &str) -> (u16, Option<String>, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, ct, r.text().await.unwrap())
}

#[tokio::test]
async fn serves_metrics_health_and_readiness() {
    let metrics = Metrics::new().unwrap();
    let health = Health::default();
    let (addr, task) = serve(
        "127.0.0.1:0".parse().unwrap(),
        metrics.clone(),
        health.clone(),
    )
    .await
    .unwrap();
    assert_ne!(addr.port(), 0);

    let (s, _, body) = get(addr, "/healthz").await;
    assert_eq!((s, body.as_str()), (200, "ok\n"));

    let (s, _, body) = get(addr, "/readyz").await;
    assert_eq!(s, 503);
    assert_eq!(body, "not ready: not connected to Postgres\n");

    metrics.events_decoded_total.inc_by(7);
    metrics
        .events_dead_lettered_total
        .with_label_values(&["missing_field"])
        .inc();
    metrics.convex_error(true, "503");
    let (s, ct, body) = get(addr, "/metrics").await;
    assert_eq!(s, 200);
    assert_eq!(ct.as_deref(), Some("text/plain; version=0.0.4"));
    assert!(body.contains("projector_events_decoded_total 7"), "{body}");
    assert!(body.contains("projector_events_dead_lettered_total{reason=\"missing_field\"} 1"));
    assert!(body.contains("projector_convex_errors_total{class=\"transient\",code=\"503\"} 1"));
    assert!(body.contains("projector_ready 0"));
    // every family without labels (or with pre-created labels) is exposed
    for m in names::ALL.iter().filter(|m| m.labels.is_empty()) {
        assert!(
            body.contains(&format!("# TYPE {} {}", m.name, m.kind.as_str())),
            "{}",
            m.name
        );
    }

    health.set_connected(true);
    health.set_streaming(true);
    let (s, _, body) = get(addr, "/readyz").await;
    assert_eq!((s, body.as_str()), (200, "ready\n"));
    let (_, _, body) = get(addr, "/metrics").await;
    assert!(body.contains("projector_ready 1"));

    health.set_blocked(Some(
        "slot projector in use by another consumer; standing by".into(),
    ));
    let (s, _, body) = get(addr, "/readyz").await;
    assert_eq!(s, 503);
    assert!(body.contains("standing by"), "{body}");

    // a second server on the same address names the fix
    let e = serve(addr, metrics.clone(), health.clone())
        .await
        .unwrap_err();
    assert!(matches!(e, ServeError::AddrInUse { .. }));
    assert!(e.to_string().contains("PROJECTOR_METRICS_ADDR"), "{e}");
    task.abort();
}
