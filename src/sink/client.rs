//! The Convex HTTP API client: one request, one attempt.
//!
//! ```text
//! args ──serde──▶ {"path","args","format":"json"} ──POST /api/{query,mutation}──▶ Convex
//!   Authorization: Convex <admin key>   (header marked sensitive)
//! ◀── 200 {"status":"success","value"} → Ok(value)
//! ◀── 200 {"status":"error","errorMessage"} → SinkError::Function (definite)
//! ◀── non-2xx {"code","message"} → 429/5xx/408 transient, other 4xx definite
//! ```
//!
//! Retries live in [`crate::sink::retry`]; this layer only classifies.
//! The admin key is held twice: as a sensitive header value (hyper and
//! reqwest print it as `Sensitive`) and as a [`Secret`] used only to scrub
//! server-provided texts before they become errors or logs.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::config::Secret;
use crate::sink::error::{from_status, parse_retry_after, shorten, SinkError};

/// Which HTTP endpoint a function is called through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Query,
    Mutation,
}

impl Kind {
    fn endpoint(self) -> &'static str {
        match self {
            Kind::Query => "api/query",
            Kind::Mutation => "api/mutation",
        }
    }
}

/// A Convex deployment reached with an admin (or deploy) key. Cheap to
/// clone (the connection pool is shared).
#[derive(Clone)]
pub struct ConvexClient {
    http: reqwest::Client,
    url: String,
    /// Parsed once: parsing them per request was ~3 % of the CPU of
    /// following live traffic.
    query_url: url::Url,
    mutation_url: url::Url,
    auth: HeaderValue,
    key: Secret,
    timeout: Duration,
}

impl fmt::Debug for ConvexClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConvexClient")
            .field("url", &self.url)
            .field("admin_key", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(tag = "status")]
enum Answer {
    #[serde(rename = "success")]
    Success {
        #[serde(default)]
        value: Value,
    },
    #[serde(rename = "error")]
    Error {
        #[serde(rename = "errorMessage", default)]
        error_message: String,
        #[serde(rename = "errorData", default)]
        error_data: Option<Value>,
    },
}

impl ConvexClient {
    /// `url` is the deployment URL (`https://<name>.convex.cloud` or a
    /// self-hosted / local backend); `timeout` bounds each request,
    /// connect included.
    pub fn new(url: &str, admin_key: Secret, timeout: Duration) -> Result<Self, SinkError> {
        let parsed = url::Url::parse(url).map_err(|e| {
            SinkError::Config(format!(
                "--convex-url {:?} is not a URL ({e}); expected e.g. https://happy-animal-123.convex.cloud",
                shorten(url)
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SinkError::Config(format!(
                "--convex-url must be http:// or https://, got {}://",
                parsed.scheme()
            )));
        }
        if parsed.scheme() == "http" && !is_loopback(&parsed) && !allow_http_from_env() {
            return Err(SinkError::Config(format!(
                "--convex-url {:?} is plain http to a host that is not loopback: the admin key would travel in clear; use https://, or set {ALLOW_HTTP_ENV}=1 for a private network you control (e.g. compose's)",
                shorten(url)
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(SinkError::Config(
                "--convex-url must not contain credentials; pass the key with --convex-admin-key"
                    .into(),
            ));
        }
        if admin_key.is_empty() {
            return Err(SinkError::Config(
                "the Convex admin key is empty: pass --convex-admin-key or set CONVEX_ADMIN_KEY"
                    .into(),
            ));
        }
        let mut auth =
            HeaderValue::from_str(&format!("Convex {}", admin_key.expose())).map_err(|_| {
                SinkError::Config(
                    "the Convex admin key contains characters not allowed in an HTTP header".into(),
                )
            })?;
        auth.set_sensitive(true);
        if timeout.is_zero() {
            return Err(SinkError::Config(
                "the Convex timeout must be positive".into(),
            ));
        }
        let mut builder = reqwest::Client::builder()
            // A redirect would resend the admin key to wherever it points
            // (and an https URL could be sent to http): none are followed.
            .redirect(reqwest::redirect::Policy::none())
            // HTTP(S)_PROXY/ALL_PROXY are not read: only a proxy named for
            // the projector sees the admin key.
            .no_proxy();
        if let Some(proxy) = proxy_from_env()? {
            builder = builder.proxy(proxy);
        }
        let http = builder
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("projector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SinkError::Config(format!("cannot build the HTTP client: {e}")))?;
        let base = url.trim_end_matches('/').to_string();
        let endpoint = |kind: Kind| {
            let joined = format!("{base}/{}", kind.endpoint());
            url::Url::parse(&joined).map_err(|e| {
                SinkError::Config(format!(
                    "--convex-url {:?} does not make an endpoint URL ({e})",
                    shorten(url)
                ))
            })
        };
        Ok(ConvexClient {
            http,
            query_url: endpoint(Kind::Query)?,
            mutation_url: endpoint(Kind::Mutation)?,
            url: base,
            auth,
            key: admin_key,
            timeout,
        })
    }

    /// The deployment URL (no secret in it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs a query once and decodes its value.
    pub async fn query<T: DeserializeOwned>(
        &self,
        path: &str,
        args: Value,
    ) -> Result<T, SinkError> {
        self.call(Kind::Query, path, args).await
    }

    /// Runs a mutation once and decodes its value.
    pub(crate) async fn mutation<T: DeserializeOwned>(
        &self,
        path: &str,
        args: Value,
    ) -> Result<T, SinkError> {
        self.call(Kind::Mutation, path, args).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        kind: Kind,
        path: &str,
        args: Value,
    ) -> Result<T, SinkError> {
        let body = encode_body(path, &args)?;
        let value = self.send(kind, path, body).await?;
        decode_value(path, value)
    }

    /// Sends a pre-encoded body (`{"path","args","format"}`) once and
    /// returns the function's value.
    pub async fn send(&self, kind: Kind, path: &str, body: Bytes) -> Result<Value, SinkError> {
        let url = match kind {
            Kind::Query => &self.query_url,
            Kind::Mutation => &self.mutation_url,
        };
        let started = Instant::now();
        let bytes_out = body.len();
        let resp = self
            .http
            .post(url.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport(path, e))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = resp.bytes().await.map_err(|e| self.transport(path, e))?;
        tracing::debug!(
            path,
            status = status.as_u16(),
            bytes_out,
            bytes_in = text.len(),
            ms = started.elapsed().as_millis() as u64,
            "convex call"
        );
        if !status.is_success() {
            let body = self.scrub(&String::from_utf8_lossy(&text));
            return Err(from_status(path, status.as_u16(), &body, retry_after));
        }
        match serde_json::from_slice::<Answer>(&text) {
            Ok(Answer::Success { value }) => Ok(value),
            Ok(Answer::Error {
                error_message,
                error_data,
            }) => Err(SinkError::Function {
                path: path.to_string(),
                message: self.scrub(&error_message),
                data: error_data,
            }),
            Err(e) => Err(SinkError::Protocol {
                path: path.to_string(),
                why: format!(
                    "HTTP {status} body is not a Convex answer ({e}): {}",
                    self.scrub(&shorten(&String::from_utf8_lossy(&text)))
                ),
            }),
        }
    }

    fn transport(&self, path: &str, e: reqwest::Error) -> SinkError {
        let path = path.to_string();
        if e.is_timeout() {
            return SinkError::Timeout {
                path,
                timeout: self.timeout,
            };
        }
        // The whole cause chain: reqwest's top line alone ("error sending
        // request") does not say what broke.
        let is_connect = e.is_connect();
        let e = e.without_url();
        let mut why = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            why.push_str(": ");
            why.push_str(&s.to_string());
            src = s.source();
        }
        let why = self.scrub(&why);
        if is_connect {
            SinkError::Connect {
                url: self.url.clone(),
                path,
                why,
            }
        } else {
            SinkError::Network { path, why }
        }
    }

    /// Removes the admin key from any server-provided text.
    fn scrub(&self, s: &str) -> String {
        let key = self.key.expose();
        if key.len() >= 4 && s.contains(key) {
            s.replace(key, "<redacted>")
        } else {
            s.to_string()
        }
    }
}

/// Set to `1` to allow `http://` to a host that is not loopback.
pub(crate) const ALLOW_HTTP_ENV: &str = "PROJECTOR_CONVEX_ALLOW_HTTP";
/// The one proxy the Convex client uses (`http://host:port`, credentials
/// allowed); the usual `HTTPS_PROXY` & co. are ignored.
pub(crate) const PROXY_ENV: &str = "PROJECTOR_CONVEX_PROXY";

/// `localhost`, 127.0.0.0/8 or ::1: plain http never leaves the machine.
fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn allow_http_from_env() -> bool {
    std::env::var(ALLOW_HTTP_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

fn proxy_from_env() -> Result<Option<reqwest::Proxy>, SinkError> {
    let Ok(url) = std::env::var(PROXY_ENV) else {
        for name in [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            if std::env::var_os(name).is_some() {
                tracing::info!(
                    variable = name,
                    "proxy variable ignored for Convex calls; set {PROXY_ENV} to use a proxy"
                );
                break;
            }
        }
        return Ok(None);
    };
    if url.is_empty() {
        return Ok(None);
    }
    reqwest::Proxy::all(&url).map(Some).map_err(|_| {
        // The URL may carry proxy credentials: never echo it.
        SinkError::Config(format!(
            "{PROXY_ENV} is not a proxy URL; expected e.g. http://proxy.internal:3128"
        ))
    })
}

/// `{"path":..,"args":..,"format":"json"}` as bytes.
pub(crate) fn encode_body<A: serde::Serialize + ?Sized>(
    path: &str,
    args: &A,
) -> Result<Bytes, SinkError> {
    #[derive(serde::Serialize)]
    struct Envelope<'a, A: ?Sized> {
        path: &'a str,
        args: &'a A,
        format: &'static str,
    }
    serde_json::to_vec(&Envelope {
        path,
        args,
        format: "json",
    })
    .map(Bytes::from)
    .map_err(|e| SinkError::Encode {
        path: path.to_string(),
        why: e.to_string(),
    })
}

pub(crate) fn decode_value<T: DeserializeOwned>(path: &str, value: Value) -> Result<T, SinkError> {
    T::deserialize(&value).map_err(|e| SinkError::Protocol {
        path: path.to_string(),
        why: format!("{e} in {}", shorten(&value.to_string())),
    })
}
