//! `projector sandbox` (hidden): the throwaway Postgres and/or the local
//! Convex backend for scripts (bench/*.py), so they share the launcher
//! `demo` and the tests use. Prints one JSON line of connection facts on
//! stdout once everything is ready, then runs until SIGTERM, SIGINT or EOF
//! on stdin (the parent closing the pipe or dying); on the way out the
//! server is stopped and its directory removed. If this process is killed
//! outright the postmaster still dies with it (PR_SET_PDEATHSIG).

use std::process::ExitCode;

use clap::Args;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};

use super::convex::{ConvexOptions, LocalConvex};
use super::postgres::{LocalPostgres, PgOptions};

#[derive(Args, Debug)]
pub(crate) struct SandboxArgs {
    /// A postgresql.conf line, after the sandbox's defaults (repeatable),
    /// e.g. `--conf "synchronous_commit = on"`.
    #[arg(long = "conf", value_name = "LINE")]
    pub(crate) conf: Vec<String>,
    /// An address to listen on (repeatable; default 127.0.0.1). The URL
    /// printed uses the first.
    #[arg(long = "listen", value_name = "ADDR")]
    pub(crate) listen: Vec<String>,
    /// A pg_hba.conf line appended after initdb's (repeatable; the first
    /// match wins, so it only adds what initdb's lines do not cover), e.g.
    /// `--hba "host all all 10.0.0.1/32 scram-sha-256"`.
    #[arg(long = "hba", value_name = "LINE")]
    pub(crate) hba: Vec<String>,
    /// Apply `sql/001_runtime_events.sql` to the `postgres` database.
    #[arg(long)]
    pub(crate) schema: bool,
    /// Start no Postgres (with `--convex`: the backend alone).
    #[arg(long)]
    pub(crate) no_postgres: bool,
    /// Also start the local Convex backend.
    #[arg(long)]
    pub(crate) convex: bool,
    /// Environment for the backend, `KEY=VALUE` (repeatable), e.g. the
    /// `JWT_ISSUER`, `JWT_JWKS_URL`, `JWT_APPLICATION_ID` of a token issuer.
    #[arg(long = "convex-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub(crate) convex_env: Vec<(String, String)>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

pub(crate) async fn main(args: SandboxArgs) -> anyhow::Result<ExitCode> {
    let mut facts = serde_json::Map::new();
    let pg = if args.no_postgres {
        None
    } else {
        let mut opts = PgOptions {
            conf: args.conf.clone(),
            ..Default::default()
        };
        if !args.listen.is_empty() {
            opts.listen_addresses = args.listen.clone();
        }
        let hba = args.hba.clone();
        let pg = tokio::task::spawn_blocking(move || -> anyhow::Result<LocalPostgres> {
            let pg = LocalPostgres::init(&opts)?;
            if !hba.is_empty() {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(pg.data.join("pg_hba.conf"))?;
                writeln!(f, "\n{}", hba.join("\n"))?;
            }
            pg.start_server()?;
            Ok(pg)
        })
        .await??;
        if args.schema {
            let (client, conn) =
                tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client.batch_execute(super::postgres::SCHEMA).await?;
        }
        facts.insert("url".into(), json!(pg.url("postgres")));
        facts.insert("socket_url".into(), json!(pg.socket_url("postgres")));
        facts.insert("socket_dir".into(), json!(pg.dir));
        facts.insert("host".into(), json!(pg.host));
        facts.insert("port".into(), json!(pg.port));
        facts.insert("password".into(), json!(pg.password().expose()));
        facts.insert("dir".into(), json!(pg.dir));
        facts.insert("data".into(), json!(pg.data));
        facts.insert("log".into(), json!(pg.log_path()));
        Some(pg)
    };
    let convex = if args.convex {
        let opts = ConvexOptions {
            env: args.convex_env.clone(),
            ..Default::default()
        };
        let c = tokio::task::spawn_blocking(move || LocalConvex::start_blocking(&opts)).await??;
        facts.insert("convex_url".into(), json!(c.url));
        facts.insert("convex_admin_key".into(), json!(c.admin_key.expose()));
        Some(c)
    } else {
        None
    };
    println!("{}", serde_json::Value::Object(facts));

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let eof = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        // Input is ignored; only its end matters.
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = eof => {}
    }
    // Stopping the server blocks (it waits for the postmaster to exit).
    tokio::task::spawn_blocking(move || {
        drop(convex);
        drop(pg);
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
