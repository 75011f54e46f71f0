//! Ordinary SQL connections (tokio-postgres) with the same TLS rules as the
//! replication connection. tokio-postgres does not know verify-ca/verify-full,
//! so we translate sslmode ourselves and let our rustls config verify.

use tokio_postgres::config::SslMode as PgSslMode;

use crate::secret::Secret;
use crate::source::conninfo::{ConnInfo, SslMode};
use crate::source::error::SourceError;
use crate::source::hosts::SessionAttrs;
use crate::source::tls;

pub fn pg_config(info: &ConnInfo) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    // A host starting with `/` is a socket directory to tokio-postgres too;
    // `ConnInfo::parse` already turned TLS off for it, as libpq does.
    // Every host in order (tokio-postgres tries them as libpq does).
    for (host, port) in &info.hosts {
        cfg.host(host).port(*port);
    }
    if info.target_session_attrs == SessionAttrs::ReadWrite {
        cfg.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    }
    cfg.user(&info.user)
        .dbname(&info.dbname)
        .application_name(&info.application_name)
        .ssl_mode(match info.sslmode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            _ => PgSslMode::Require,
        });
    if let Some(p) = &info.password {
        cfg.password(p.expose());
    }
    if let Some(t) = info.connect_timeout {
        cfg.connect_timeout(t);
    }
    cfg
}

/// Connects for ordinary SQL and spawns the connection task.
pub async fn connect(url: &Secret) -> Result<tokio_postgres::Client, SourceError> {
    let info = ConnInfo::parse(url.expose())?;
    connect_info(&info).await
}

pub async fn connect_info(info: &ConnInfo) -> Result<tokio_postgres::Client, SourceError> {
    let cfg = pg_config(info);
    let client = match tls::client_config(info)? {
        None => {
            let (client, conn) = cfg
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| map_err(info, e))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            client
        }
        Some(tls_cfg) => {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls_cfg).clone());
            let (client, conn) = cfg.connect(tls).await.map_err(|e| map_err(info, e))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            client
        }
    };
    Ok(client)
}

fn map_err(info: &ConnInfo, e: tokio_postgres::Error) -> SourceError {
    match SourceError::from(e) {
        SourceError::AuthFailed { message, .. } => SourceError::AuthFailed {
            user: info.user.clone(),
            message,
        },
        SourceError::Sql(m)
            if m.contains("certificate") || m.contains("tls") || m.contains("TLS") =>
        {
            SourceError::Tls {
                host: info.host.clone(),
                message: m,
            }
        }
        other => other,
    }
}
