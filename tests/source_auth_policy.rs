//! A scripted fake server (no Postgres) checks what the client sends back:
//! a request the policy refuses gets no answer at all (no password bytes
//! on the wire), and AuthenticationOk is refused until SCRAM's server-final
//! message was verified. Every case runs on the SQL connection
//! (tokio-postgres behind the guard) and on the replication connection.

use std::time::Duration;

use projector::source::conn::PgConn;
use projector::source::conninfo::ConnInfo;
use projector::source::{sql, SourceError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PASSWORD: &str = "hunter2-secret";

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn auth(code: i32, data: &[u8]) -> Vec<u8> {
    let mut b = code.to_be_bytes().to_vec();
    b.extend_from_slice(data);
    msg(b'R', &b)
}

/// Reads one frontend message (tag, body); the startup message has no tag.
async fn read_startup(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
    s.read_exact(&mut body).await.unwrap();
    body
}

async fn read_msg(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.ok()?;
    Some((head[0], body))
}

/// Everything the client sends until it closes (bounded wait).
async fn rest(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await;
    all
}

#[derive(Clone, Copy, Debug)]
enum Script {
    /// Asks for a cleartext password.
    Cleartext,
    /// Asks for an md5 password.
    Md5,
    /// Says AuthenticationOk at once (trust).
    Trust,
    /// Runs SCRAM up to the client's final message, then says
    /// AuthenticationOk without the server-final (signature) message.
    ScramWithoutFinal,
    /// Offers SCRAM-SHA-256-PLUS on a plain connection.
    PlusOverPlain,
}

/// Serves one connection with `script`; returns what the client sent
/// after the startup message.
async fn fake_server(script: Script) -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_startup(&mut s).await;
        match script {
            Script::Cleartext => s.write_all(&auth(3, b"")).await.unwrap(),
            Script::Md5 => s.write_all(&auth(5, b"salt")).await.unwrap(),
            Script::Trust => {
                let mut w = auth(0, b"");
                w.extend(msg(b'Z', b"I"));
                s.write_all(&w).await.unwrap();
            }
            Script::PlusOverPlain => {
                s.write_all(&auth(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"))
                    .await
                    .unwrap();
            }
            Script::ScramWithoutFinal => {
                s.write_all(&auth(10, b"SCRAM-SHA-256\0\0")).await.unwrap();
                let (_, first) = read_msg(&mut s).await.unwrap();
                // SASLInitialResponse: mechanism\0, i32 length, client-first.
                let text = String::from_utf8_lossy(&first).into_owned();
                let nonce = text.split("r=").nth(1).unwrap().to_string();
                let server_first = format!("r={nonce}SERVERNONCE,s=c2FsdHNhbHQ=,i=4096");
                s.write_all(&auth(11, server_first.as_bytes()))
                    .await
                    .unwrap();
                let (tag, _) = read_msg(&mut s).await.unwrap();
                assert_eq!(tag, b'p', "client-final");
                // No SASLFinal: straight to "OK".
                let mut w = auth(0, b"");
                w.extend(msg(b'Z', b"I"));
                s.write_all(&w).await.unwrap();
            }
        }
        rest(&mut s).await
    });
    (port, task)
}

async fn both(query: &str, script: Script) -> Vec<(String, SourceError, Vec<u8>)> {
    let mut out = Vec::new();
    for conn in ["SQL", "replication"] {
        let (port, server) = fake_server(script).await;
        let url = format!("postgres://u:{PASSWORD}@127.0.0.1:{port}/db?sslmode=disable&{query}");
        let info = ConnInfo::parse(&url).unwrap();
        let err = if conn == "SQL" {
            sql::connect_info(&info).await.map(|_| ()).unwrap_err()
        } else {
            PgConn::connect(&info, true).await.map(|_| ()).unwrap_err()
        };
        let sent = server.await.unwrap();
        out.push((conn.to_string(), err, sent));
    }
    out
}

fn assert_no_password(conn: &str, sent: &[u8]) {
    let s = String::from_utf8_lossy(sent);
    assert!(
        !s.contains(PASSWORD) && !sent.contains(&b'p'),
        "{conn}: the client answered the refused request: {s:?}"
    );
}

#[tokio::test]
async fn channel_binding_require_never_answers_a_password_request() {
    for script in [Script::Cleartext, Script::Md5] {
        for (conn, err, sent) in both("channel_binding=require", script).await {
            assert_no_password(&conn, &sent);
            let line = err.to_string();
            assert!(
                line.contains(
                    "channel binding required but not supported by server's authentication request"
                ),
                "{conn} {script:?}: {line}"
            );
        }
    }
}

#[tokio::test]
async fn channel_binding_require_refuses_an_unauthenticated_ok() {
    for (conn, err, _) in both("channel_binding=require", Script::Trust).await {
        let line = err.to_string();
        assert!(
            line.contains("server authenticated client without channel binding"),
            "{conn}: {line}"
        );
    }
}

#[tokio::test]
async fn require_auth_refuses_before_answering() {
    for (conn, err, sent) in both("require_auth=scram-sha-256", Script::Cleartext).await {
        assert_no_password(&conn, &sent);
        assert!(
            err.to_string()
                .contains("server requested a cleartext password"),
            "{conn}: {err}"
        );
    }
    for (conn, err, _) in both("require_auth=scram-sha-256", Script::Trust).await {
        assert!(
            err.to_string()
                .contains("server did not complete authentication"),
            "{conn}: {err}"
        );
    }
    // Without require_auth, trust is fine (the fake then closes).
}

#[tokio::test]
async fn ok_before_the_scram_server_signature_is_refused() {
    for (conn, err, _) in both("", Script::ScramWithoutFinal).await {
        let line = err.to_string();
        assert!(line.contains("before SCRAM finished"), "{conn}: {line}");
        assert!(!line.contains(PASSWORD));
    }
}

#[tokio::test]
async fn scram_plus_offered_on_a_plain_connection_is_refused() {
    for (conn, err, sent) in both("", Script::PlusOverPlain).await {
        assert_no_password(&conn, &sent);
        assert!(
            err.to_string().contains(
                "server offered SCRAM-SHA-256-PLUS authentication over a non-SSL connection"
            ),
            "{conn}: {err}"
        );
    }
}
