//! Metric names, the registry and the /metrics, /healthz, /readyz server.
