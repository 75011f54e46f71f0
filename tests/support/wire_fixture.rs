//! A scripted HTTP/1.1 server for transport-level tests of the Convex
//! client: each request pops the next scripted reply (default: a success
//! echoing nothing). It knows nothing of our functions; it exists to
//! produce the failures a real network produces (drops, stalls, odd
//! bodies) and a hostile server that echoes the Authorization header.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub enum Reply {
    /// HTTP 200 `{"status":"success","value": <json>}`.
    Success(String),
    /// Any status with extra headers and a raw body; `{auth}` in the body
    /// is replaced by the request's Authorization header.
    Raw {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Close the connection without answering.
    Drop,
    /// Wait, then answer with the inner reply.
    Delay(Duration, Box<Reply>),
}

pub struct WireFixture {
    pub addr: SocketAddr,
    script: Arc<Mutex<VecDeque<Reply>>>,
    pub requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WireFixture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WireFixture {
    pub async fn start() -> WireFixture {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script: Arc<Mutex<VecDeque<Reply>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s, r) = (script.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (s, r) = (s.clone(), r.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, s, r).await;
                });
            }
        });
        WireFixture {
            addr,
            script,
            requests,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push(&self, reply: Reply) {
        self.script.lock().unwrap().push_back(reply);
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

async fn serve(
    mut sock: tokio::net::TcpStream,
    script: Arc<Mutex<VecDeque<Reply>>>,
    requests: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    loop {
        // Read one request: headers, then Content-Length bytes.
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        let len: usize = header("content-length").parse().unwrap_or(0);
        let auth = header("authorization");
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        requests
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string());
        let mut reply = script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Reply::Success("null".into()));
        while let Reply::Delay(d, inner) = reply {
            tokio::time::sleep(d).await;
            reply = *inner;
        }
        let (status, headers, body) = match reply {
            Reply::Success(v) => (
                200,
                vec![],
                format!(r#"{{"status":"success","value":{v}}}"#),
            ),
            Reply::Raw {
                status,
                headers,
                body,
            } => (status, headers, body.replace("{auth}", &auth)),
            Reply::Drop => return Ok(()),
            Reply::Delay(..) => unreachable!(),
        };
        let mut out = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&body);
        sock.write_all(out.as_bytes()).await?;
    }
}
