//! The metrics section: where `/metrics`, `/healthz` and `/readyz` listen.

use std::net::SocketAddr;

use clap::Args;
use serde::Deserialize;

use super::{with_default, ConfigError, Layers};

/// Loopback: nothing is exposed until an operator opts in (the container
/// image sets `0.0.0.0:9187`).
pub(crate) const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9187";

/// The `--help` heading of this section (per argument: a struct-wide
/// heading would carry over to the flags declared after the section).
const HEADING: &str = "Metrics";

#[derive(Args, Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct MetricsArgs {
    #[arg(long, help_heading = HEADING, env = "PROJECTOR_METRICS_ADDR", help = with_default(
        "host:port of /metrics, /healthz and /readyz (the container image sets 0.0.0.0:9187)",
        DEFAULT_METRICS_ADDR,
    ))]
    pub(crate) metrics_addr: Option<String>,
}

/// The listening address: an IP and a port (a host name would be resolved
/// at bind time, and could resolve to something else later).
pub(super) fn addr(l: &Layers<'_, MetricsArgs>) -> Result<SocketAddr, ConfigError> {
    let text = l
        .get(|m| &m.metrics_addr)
        .unwrap_or_else(|| DEFAULT_METRICS_ADDR.into());
    text.parse().map_err(|_| {
        ConfigError::invalid(
            "metrics_addr",
            format!("{text:?} is not IP:port, e.g. 127.0.0.1:9187 or 0.0.0.0:9187"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(v: Option<&str>) -> Result<SocketAddr, String> {
        let args = MetricsArgs {
            metrics_addr: v.map(str::to_string),
        };
        let file = MetricsArgs::default();
        addr(&Layers::new(&args, &file)).map_err(|e| e.to_string())
    }

    #[test]
    fn the_default_is_loopback() {
        assert!(resolve(None).unwrap().ip().is_loopback());
    }

    #[test]
    fn a_host_name_or_missing_port_is_refused_with_an_example() {
        for bad in ["nope", "localhost:9187", "127.0.0.1"] {
            let e = resolve(Some(bad)).unwrap_err();
            assert!(
                e.contains("--metrics-addr") && e.contains("PROJECTOR_METRICS_ADDR"),
                "{e}"
            );
            assert!(e.contains("e.g. 127.0.0.1:9187"), "{e}");
        }
    }
}
