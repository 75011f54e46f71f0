//! The integration tests: one binary (one link, one shared Postgres
//! cluster), one module per area. `support` holds the harnesses: a
//! throwaway Postgres (`pg`), the local Convex backend (`convex_backend`),
//! the real binary as a child process (`projector_proc`, `cli`), fast
//! history (`history_sql`), a cuttable TCP link (`tcp_proxy`) and a
//! scripted HTTP peer (`wire_fixture`).

mod support;

mod allocator;
mod backfill;
mod client_live;
mod config_docs;
mod deploy_files;
mod harness;
mod lifecycle;
mod loadgen_traffic;
mod metrics_docs;
mod metrics_server;
mod pg_failover;
mod pipeline_e2e;
mod pipeline_faults;
mod pipeline_memory;
mod projection_props;
mod rebuild_kill;
mod rebuild_live;
mod rebuild_scale;
mod rebuild_slot_lost;
mod sink_convex;
mod sink_http;
mod sink_null;
mod sink_redaction;
mod sink_url_rules;
mod slot_idle_timeout;
mod source_auth;
mod source_auth_policy;
mod source_decode;
mod source_errors;
mod source_pgoutput_prop;
mod source_setup;
mod source_slot;
mod source_smoke;
mod source_status;
mod source_tls_matrix;
mod status_exit_codes;
mod vectors;
mod verify_tamper;
