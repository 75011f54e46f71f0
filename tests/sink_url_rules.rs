//! Where the admin key may travel: `CONVEX_URL` must be https unless the
//! host is loopback, redirects are not followed, and the usual proxy
//! variables are ignored (only `PROJECTOR_CONVEX_PROXY` is used). One test
//! function: it changes the process environment.

use std::time::Duration;

use projector::config::Secret;
use projector::sink::client::ConvexClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const KEY: &str = "admin-key-that-must-stay-home";

/// An HTTP server answering every request with `response`; sends each
/// request's head to the channel.
async fn server(response: String) -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (tx, response) = (tx.clone(), response.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
                let _ = s.write_all(response.as_bytes()).await;
            });
        }
    });
    (port, rx)
}

fn ok_answer() -> String {
    let body = r#"{"status":"success","value":1}"#;
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn client(url: &str) -> Result<ConvexClient, String> {
    ConvexClient::new(url, Secret::new(KEY), Duration::from_secs(5)).map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_admin_key_goes_only_where_convex_url_says() {
    // https unless loopback.
    let e = client("http://convex.example.com").unwrap_err();
    assert!(e.contains("plain http") && e.contains("https://"), "{e}");
    assert!(client("http://10.0.0.3:3210").is_err());
    for ok in [
        "https://happy-animal-123.convex.cloud",
        "http://127.0.0.1:3210",
        "http://127.0.0.53:3210",
        "http://localhost:3210",
        "http://[::1]:3210",
    ] {
        client(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    // SAFETY (edition 2021 set_var): this binary runs this one test only.
    std::env::set_var("PROJECTOR_CONVEX_ALLOW_HTTP", "1");
    client("http://convex-backend:3210").unwrap();
    std::env::remove_var("PROJECTOR_CONVEX_ALLOW_HTTP");

    // No redirects: the key is not resent to the Location.
    let (elsewhere, mut elsewhere_rx) = server(ok_answer()).await;
    let (redirector, mut redirector_rx) = server(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{elsewhere}/api/query\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    ))
    .await;
    let c = client(&format!("http://127.0.0.1:{redirector}")).unwrap();
    let r = c
        .query::<serde_json::Value>("f:g", serde_json::json!({}))
        .await;
    assert!(r.is_err(), "a redirect is not a Convex answer: {r:?}");
    assert!(redirector_rx.try_recv().unwrap().contains(KEY));
    // Deliberate: a moment passes to show no request reaches the Location.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        elsewhere_rx.try_recv().is_err(),
        "the redirect was followed"
    );

    // The usual proxy variables are ignored...
    let (proxy, mut proxy_rx) = server(ok_answer()).await;
    let (direct, mut direct_rx) = server(ok_answer()).await;
    for v in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "HTTPS_PROXY"] {
        std::env::set_var(v, format!("http://127.0.0.1:{proxy}"));
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");
    let c = client(&format!("http://127.0.0.1:{direct}")).unwrap();
    let v: i64 = c.query("f:g", serde_json::json!({})).await.unwrap();
    assert_eq!(v, 1);
    assert!(proxy_rx.try_recv().is_err(), "HTTP_PROXY was used");
    assert!(
        direct_rx.try_recv().is_ok(),
        "the call did not go straight to CONVEX_URL"
    );
    for v in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "HTTPS_PROXY"] {
        std::env::remove_var(v);
    }
    // ... and the projector's own is used.
    std::env::set_var(
        "PROJECTOR_CONVEX_PROXY",
        format!("http://127.0.0.1:{proxy}"),
    );
    let c = client(&format!("http://127.0.0.1:{direct}")).unwrap();
    let v: i64 = c.query("f:g", serde_json::json!({})).await.unwrap();
    assert_eq!(v, 1);
    let head = proxy_rx
        .try_recv()
        .expect("the call went through PROJECTOR_CONVEX_PROXY");
    assert!(
        head.starts_with(&format!("POST http://127.0.0.1:{direct}/api/query")),
        "{head}"
    );
    std::env::set_var("PROJECTOR_CONVEX_PROXY", "not a url with secret:pw@");
    let e = client("http://127.0.0.1:1").unwrap_err();
    assert!(!e.contains("secret:pw"), "{e}");
    std::env::remove_var("PROJECTOR_CONVEX_PROXY");
}
