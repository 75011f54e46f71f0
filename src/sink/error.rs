//! Failures talking to Convex, split by what the caller should do.
//!
//! * **Transient** ([`SinkError::is_transient`]): connect failures, timeouts,
//!   broken connections, HTTP 408/429/5xx (503 is Convex's OCC/overload
//!   answer). Retrying is safe even for mutations: a timed-out `apply` may
//!   have committed, and the position guard turns the replay into skips.
//! * **Definite**: any other 4xx, a `{"status":"error"}` answer from our own
//!   function (carrying Convex's `errorMessage`), a request we cannot
//!   encode, an answer we cannot decode. Retrying cannot help; the pipeline
//!   splits the batch to isolate the offending document instead.
//!
//! No variant ever holds the admin key: the client scrubs every text that
//! comes back from the server before it lands here.

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Bad `--convex-url` or client setup; fix the configuration.
    #[error("invalid Convex configuration: {0}")]
    Config(String),
    /// The request could not be encoded (e.g. a NaN number).
    #[error("cannot encode the Convex request for {path}: {why}")]
    Encode { path: String, why: String },
    /// TCP/TLS connect failed.
    #[error("cannot connect to Convex at {url} for {path}: {why}; check --convex-url / CONVEX_URL and that the deployment is reachable")]
    Connect {
        url: String,
        path: String,
        why: String,
    },
    /// No answer within the client timeout (a mutation may have committed).
    #[error(
        "Convex did not answer {path} within {timeout:?} (it may have committed; retrying is safe)"
    )]
    Timeout { path: String, timeout: Duration },
    /// The connection broke while sending or receiving.
    #[error("network error during Convex {path}: {why}")]
    Network { path: String, why: String },
    /// HTTP 429. `code`: Convex's (`TooManyWrites` for the write
    /// throughput budget, `TooManyConcurrentRequests` for its slots).
    #[error("Convex rate-limited {path} (HTTP 429 {code}{}): {message}", fmt_retry_after(*retry_after))]
    RateLimited {
        path: String,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// HTTP 5xx or 408: overloaded, OCC conflict (503), internal error.
    #[error("Convex server error on {path}: HTTP {status} {code}{}: {message}", fmt_retry_after(*retry_after))]
    Server {
        path: String,
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// Any other non-2xx answer (400, 401, 403, 404, ...).
    #[error("Convex rejected {path}: HTTP {status} {code}: {message}{}", hint(*status))]
    Rejected {
        path: String,
        status: u16,
        code: String,
        message: String,
    },
    /// `{"status":"error"}`: the function ran and threw (the transaction
    /// was rolled back). `message` is Convex's `errorMessage`.
    #[error("Convex function {path} failed: {message}")]
    Function {
        path: String,
        message: String,
        data: Option<Value>,
    },
    /// A 2xx answer that is not the Convex wire format, or a value of the
    /// wrong shape.
    #[error("unexpected answer from Convex for {path}: {why}")]
    Protocol { path: String, why: String },
    /// A stored value that the caller could not interpret (e.g. a position
    /// string that does not parse).
    #[error("cannot decode a value stored in Convex: {0}")]
    Decode(String),
}

fn fmt_retry_after(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!(", Retry-After {}s", d.as_secs_f64()),
        None => String::new(),
    }
}

fn hint(status: u16) -> &'static str {
    match status {
        401 | 403 => " (check --convex-admin-key / CONVEX_ADMIN_KEY: an admin or deploy key of this deployment)",
        404 => " (are the functions deployed? run `npx convex deploy`)",
        _ => "",
    }
}

impl SinkError {
    /// True when the same request may succeed if retried later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SinkError::Connect { .. }
                | SinkError::Timeout { .. }
                | SinkError::Network { .. }
                | SinkError::RateLimited { .. }
                | SinkError::Server { .. }
        )
    }

    /// Definite, but not about any document: a wrong admin key (401/403),
    /// functions not deployed (404), something that is not Convex
    /// answering, bad configuration. Every request would fail the same
    /// way, so splitting a batch and dead-lettering its events would be
    /// wrong: stop (or alert) and let the operator fix the deployment.
    pub fn is_deployment_error(&self) -> bool {
        match self {
            SinkError::Rejected { status, .. } => matches!(status, 401 | 403 | 404),
            SinkError::Protocol { .. } | SinkError::Config(_) => true,
            // Real Convex answers a missing (or internal-only) function with
            // HTTP 200 and this error (crates/udf/src/validation.rs), not 404.
            // Deployment skew: our functions refuse the binary's schema
            // version, or (older functions) our arguments, which the
            // binary builds and no document can change (documents are
            // `v.any()`, checked by the function into `InvalidDocument`).
            SinkError::Function { message, data, .. } => {
                message.contains("Could not find public function")
                    || message.contains("Could not find function")
                    || message.contains("ArgumentValidationError")
                    || data
                        .as_ref()
                        .and_then(|d| d.get("code"))
                        .and_then(Value::as_str)
                        == Some("SchemaMismatch")
            }
            _ => false,
        }
    }

    /// `projector:apply` refused our writer epoch: another process acquired
    /// the generation (or it was purged). Definite and not about any
    /// document: never retried, never split, never dead-lettered; the
    /// writer stops writing and goes back to standby.
    pub(crate) fn is_fenced(&self) -> bool {
        matches!(self, SinkError::Function { data: Some(d), .. }
            if d.get("code").and_then(Value::as_str) == Some("Fenced"))
    }

    /// The server's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::RateLimited { retry_after, .. } | SinkError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// A short, stable label for logs and metrics (`errors by class`).
    pub fn class(&self) -> &'static str {
        match self {
            SinkError::Config(_) => "config",
            SinkError::Encode { .. } => "encode",
            SinkError::Connect { .. } => "connect",
            SinkError::Timeout { .. } => "timeout",
            SinkError::Network { .. } => "network",
            SinkError::RateLimited { .. } => "rate_limited",
            SinkError::Server { .. } => "server",
            SinkError::Rejected { .. } => "rejected",
            SinkError::Function { .. } => "function",
            SinkError::Protocol { .. } => "protocol",
            SinkError::Decode(_) => "decode",
        }
    }

    /// Convex's own message for definite failures (`errorMessage` or the
    /// system error `message`), if any.
    pub fn convex_message(&self) -> Option<&str> {
        match self {
            SinkError::Function { message, .. }
            | SinkError::Rejected { message, .. }
            | SinkError::Server { message, .. }
            | SinkError::RateLimited { message, .. } => Some(message),
            _ => None,
        }
    }
}

/// Classifies a non-2xx HTTP answer. `body` is the (already scrubbed)
/// response text: Convex sends `{"code","message"}`; anything else is kept
/// as text, shortened.
pub(crate) fn from_status(
    path: &str,
    status: u16,
    body: &str,
    retry_after: Option<Duration>,
) -> SinkError {
    let (code, message) = match serde_json::from_str::<Value>(body) {
        Ok(v) => (
            v.get("code")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            v.get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| shorten(body)),
        ),
        Err(_) => (String::new(), shorten(body)),
    };
    let path = path.to_string();
    match status {
        429 => SinkError::RateLimited {
            path,
            code,
            message,
            retry_after,
        },
        408 | 500..=599 => SinkError::Server {
            path,
            status,
            code,
            message,
            retry_after,
        },
        _ => SinkError::Rejected {
            path,
            status,
            code,
            message,
        },
    }
}

/// Keeps error texts one readable line.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 500;
    let s = s.trim();
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push('…');
        out
    }
}

/// Parses `Retry-After`: delay-seconds (integer or decimal) or an
/// HTTP-date. Unparseable or negative values are ignored.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = when.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(ms.clamp(0, 86_400_000) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        let e = from_status(
            "p",
            429,
            r#"{"code":"RateLimited","message":"slow down"}"#,
            Some(Duration::from_secs(2)),
        );
        assert!(e.is_transient());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(e.class(), "rate_limited");
        for s in [500u16, 502, 503, 504, 408] {
            let e = from_status("p", s, r#"{"code":"Overloaded","message":"busy"}"#, None);
            assert!(e.is_transient(), "{s}");
            assert_eq!(e.class(), "server");
            assert_eq!(e.convex_message(), Some("busy"));
        }
        for s in [400u16, 401, 403, 404, 413, 422] {
            let e = from_status("p", s, r#"{"code":"BadRequest","message":"no"}"#, None);
            assert!(!e.is_transient(), "{s}");
            assert_eq!(e.class(), "rejected");
            assert_eq!(e.is_deployment_error(), matches!(s, 401 | 403 | 404), "{s}");
        }
        let e = from_status("p", 401, "plain text", None);
        let text = e.to_string();
        assert!(
            text.contains("plain text") && text.contains("admin-key"),
            "{text}"
        );
    }

    #[test]
    fn function_errors_are_definite_and_carry_the_message() {
        let e = SinkError::Function {
            path: "projector:apply".into(),
            message: "Uncaught Error: bad doc".into(),
            data: None,
        };
        assert!(!e.is_transient());
        assert!(!e.is_deployment_error());
        assert!(!e.is_fenced());
        assert!(e.to_string().contains("Uncaught Error: bad doc"));
        let fenced = SinkError::Function {
            path: "projector:apply".into(),
            message: "generation 1 is written by b".into(),
            data: Some(serde_json::json!({"code": "Fenced", "generation": "1"})),
        };
        assert!(fenced.is_fenced() && !fenced.is_transient() && !fenced.is_deployment_error());
        assert_eq!(e.convex_message(), Some("Uncaught Error: bad doc"));
    }

    #[test]
    fn transport_errors_are_transient() {
        let t = SinkError::Timeout {
            path: "p".into(),
            timeout: Duration::from_secs(1),
        };
        let c = SinkError::Connect {
            url: "u".into(),
            path: "p".into(),
            why: "refused".into(),
        };
        let n = SinkError::Network {
            path: "p".into(),
            why: "reset".into(),
        };
        assert!(t.is_transient() && c.is_transient() && n.is_transient());
        assert!(!SinkError::Protocol {
            path: "p".into(),
            why: "x".into()
        }
        .is_transient());
        assert!(!SinkError::Decode("x".into()).is_transient());
    }

    #[test]
    fn parses_retry_after() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        let future = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&future).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn shortens_long_bodies() {
        let long = "x".repeat(5000);
        assert!(shorten(&long).chars().count() <= 501);
    }
}
