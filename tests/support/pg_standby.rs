//! A physical streaming standby of a test cluster, made the way an operator
//! without `pg_basebackup` would (the npm server packages ship only
//! `initdb`, `pg_ctl` and `postgres`): a physical slot, the low-level backup
//! API (`pg_backup_start` / `pg_backup_stop`, 14: `pg_start_backup` /
//! `pg_stop_backup`) around a file copy of the data directory, the
//! returned `backup_label`, `standby.signal`, and `primary_conninfo` +
//! `primary_slot_name`. WAL is not copied: the standby streams it from the
//! backup's start, which the slot (reserved before the backup) retains.
//!
//! From 17 the standby also runs with `sync_replication_slots = on` and
//! `hot_standby_feedback = on`, and its `primary_conninfo` names a database,
//! which is what keeping failover slots needs.
#![allow(dead_code)]

use std::path::Path;

use crate::support::pg::{self, PgCluster};

/// Files and directories whose contents a base backup leaves out (the
/// directories themselves are kept, empty).
const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];
const SKIP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "tablespace_map",
];

/// Copies `from` into `to` (a live data directory: files that vanish while
/// we copy are skipped; WAL replay makes the copy consistent).
fn copy_data_dir(from: &Path, to: &Path, top: bool) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    pg::chown_pg(to);
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let (src, dst) = (entry.path(), to.join(&*name));
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if top && EMPTY_DIRS.contains(&&*name) {
                std::fs::create_dir_all(&dst).unwrap();
                pg::chown_pg(&dst);
                if name == "pg_wal" {
                    let status = dst.join("archive_status");
                    std::fs::create_dir_all(&status).unwrap();
                    pg::chown_pg(&status);
                }
            } else {
                copy_data_dir(&src, &dst, false);
            }
        } else if kind.is_file() && !(top && SKIP_FILES.contains(&&*name)) {
            match std::fs::copy(&src, &dst) {
                Ok(_) => pg::chown_pg(&dst),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("copy {}: {e}", src.display()),
            }
        }
    }
}

/// Starts a standby of `primary` streaming through the physical slot
/// `slot` (created here). The primary's pg_hba gets a replication entry
/// for the trusted superuser.
pub async fn start_standby(primary: &PgCluster, slot: &str) -> PgCluster {
    let major = pg::server_major();
    let hba = primary.data.join("pg_hba.conf");
    let mut rules = std::fs::read_to_string(&hba).unwrap();
    rules.push_str("host replication postgres 127.0.0.1/32 trust\n");
    std::fs::write(&hba, rules).unwrap();
    let client = primary.client("postgres").await;
    client
        .batch_execute(&format!(
            "select pg_reload_conf(); select pg_create_physical_replication_slot('{slot}', true)"
        ))
        .await
        .unwrap();

    // The backup session must stay open from start to stop.
    let (start, stop) = if major >= 15 {
        (
            "select pg_backup_start('standby', true)",
            "select labelfile from pg_backup_stop(false)",
        )
    } else {
        (
            "select pg_start_backup('standby', true, false)",
            "select labelfile from pg_stop_backup(false, false)",
        )
    };
    client.batch_execute(start).await.unwrap();
    let dir = primary.dir.with_file_name(format!(
        "{}-standby",
        primary.dir.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    pg::chown_pg(&dir);
    let data = dir.join("data");
    copy_data_dir(&primary.data, &data, true);
    let label: String = client.query_one(stop, &[]).await.unwrap().get(0);
    std::fs::write(data.join("backup_label"), label).unwrap();
    pg::chown_pg(&data.join("backup_label"));
    std::fs::write(data.join("standby.signal"), "").unwrap();
    pg::chown_pg(&data.join("standby.signal"));

    let port = crate::support::cli::free_port();
    let mut conf = format!(
        "\nport = {port}\nunix_socket_directories = '{}'\n\
         primary_conninfo = 'host=127.0.0.1 port={} user=postgres password={} dbname=postgres application_name=standby1'\n\
         primary_slot_name = '{slot}'\nhot_standby = on\nhot_standby_feedback = on\n",
        dir.display(),
        primary.port,
        primary.superuser_password
    );
    if major >= 17 {
        conf.push_str("sync_replication_slots = on\n");
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .unwrap();
    std::io::Write::write_all(&mut f, conf.as_bytes()).unwrap();
    // postgresql.auto.conf of the primary (ALTER SYSTEM) was copied too and
    // would win over the lines above: start from none.
    std::fs::write(data.join("postgresql.auto.conf"), "").unwrap();
    PgCluster::adopt(dir, data, port, primary.superuser_password.clone())
}
