//! `projector setup`: findings with the SQL that fixes them; `--apply`
//! creates the publication and the slot idempotently. Slots are
//! cluster-wide: every test uses its own slot name.
use crate::support::pg;

use projector::config::Secret;
use projector::setup::{doctor, Level};

#[tokio::test]
async fn doctor_reports_and_apply_fixes() {
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    db.exec("drop publication projector_events").await;
    cluster
        .create_user("setup_u", "pw", pg::Auth::Scram, "")
        .await;
    let url = Secret::new(db.url_as("setup_u", "pw", "sslmode=disable"));

    let r = doctor(&url, "projector", "projector_events", false)
        .await
        .unwrap();
    assert!(r.failed());
    let fix = |c: &str| r.get(c).unwrap().fix.clone().unwrap_or_default();
    assert_eq!(r.get("wal_level").unwrap().level, Level::Ok);
    assert_eq!(
        fix("replication_role"),
        "ALTER ROLE \"setup_u\" WITH REPLICATION;"
    );
    assert_eq!(fix("events_select"), "GRANT USAGE ON SCHEMA runtime TO \"setup_u\"; GRANT SELECT ON runtime.events TO \"setup_u\";");
    assert_eq!(
        fix("publication"),
        "CREATE PUBLICATION \"projector_events\" FOR TABLE runtime.events;"
    );
    // From 17 the slot is a failover slot (its 5th argument).
    let failover_slots = pg::server_major() >= 17;
    assert_eq!(
        fix("slot"),
        if failover_slots {
            "SELECT pg_create_logical_replication_slot('projector', 'pgoutput', false, false, true);  -- failover = true"
        } else {
            "SELECT pg_create_logical_replication_slot('projector', 'pgoutput');"
        }
    );
    assert_eq!(r.get("max_slot_wal_keep_size").unwrap().level, Level::Warn);
    assert!(r
        .get("slot")
        .unwrap()
        .to_string()
        .contains("fix: SELECT pg_create_logical_replication_slot"));

    // Run the printed fixes for the role as a superuser, then --apply twice.
    db.exec(&format!(
        "{}; {}",
        fix("replication_role"),
        fix("events_select")
    ))
    .await;
    // CREATE PUBLICATION needs table ownership and CREATE on the database.
    db.exec(&format!(
        "alter table runtime.events owner to setup_u; grant create on database {} to setup_u",
        db.dbname
    ))
    .await;
    let r = doctor(&url, "projector", "projector_events", true)
        .await
        .unwrap();
    assert_eq!(r.applied.len(), 2, "{:?}", r.applied);
    assert!(!r.failed(), "{:#?}", r.findings);
    let r = doctor(&url, "projector", "projector_events", true)
        .await
        .unwrap();
    assert!(r.applied.is_empty(), "idempotent: {:?}", r.applied);
    assert!(!r.failed());
    assert!(r
        .get("slot")
        .unwrap()
        .message
        .contains("wal_status reserved"));
    let failover: Option<bool> = db
        .client()
        .await
        .query_one(
            "select (to_jsonb(s) ->> 'failover')::bool from pg_replication_slots s where slot_name = 'projector'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failover, failover_slots.then_some(true));
    // No standby streams from the test cluster: nothing to warn about. A
    // logical walsender that holds no slot yet (a projector starting up,
    // or another test's) is not a physical standby.
    let _starting = projector::source::conn::connect_replication(&db.secret())
        .await
        .unwrap();
    let r = doctor(&url, "projector", "projector_events", false)
        .await
        .unwrap();
    let f = r.get("failover_slot").unwrap();
    assert_eq!(f.level, Level::Ok, "{f}");
    if failover_slots {
        assert!(f.message.contains("is a failover slot"), "{f}");
    } else {
        assert!(f.message.contains("rebuild"), "{f}");
    }

    // A publication that does not cover runtime.events.
    db.exec("create table other (x int); create publication narrow for table other")
        .await;
    let r = doctor(&db.secret(), "projector", "narrow", false)
        .await
        .unwrap();
    assert_eq!(
        r.get("publication").unwrap().fix.as_deref(),
        Some("ALTER PUBLICATION \"narrow\" ADD TABLE runtime.events;")
    );
}

/// 17+: a slot made without `failover` (by hand, or before an upgrade) is
/// reported, and `--apply` makes it a failover slot.
#[tokio::test]
async fn apply_makes_an_existing_slot_a_failover_slot() {
    if pg::server_major() < 17 {
        eprintln!(
            "skipped: failover slots need PostgreSQL 17 (this is {})",
            pg::server_major()
        );
        return;
    }
    let cluster = pg::shared().await;
    let db = cluster.fresh_db().await;
    let slot = db.slot_name();
    db.exec(&format!(
        "select pg_create_logical_replication_slot('{slot}', 'pgoutput')"
    ))
    .await;
    let r = doctor(&db.secret(), &slot, "projector_events", false)
        .await
        .unwrap();
    let f = r.get("failover_slot").unwrap();
    assert_eq!(f.level, Level::Warn, "{f}");
    assert!(f.message.contains("is not a failover slot"), "{f}");
    assert!(
        f.fix.as_deref().unwrap().contains(&format!(
            "ALTER_REPLICATION_SLOT \"{slot}\" (FAILOVER true)"
        )),
        "{f}"
    );
    let r = doctor(&db.secret(), &slot, "projector_events", true)
        .await
        .unwrap();
    assert_eq!(
        r.applied,
        vec![format!("ALTER_REPLICATION_SLOT \"{slot}\" (FAILOVER true)")]
    );
    assert_eq!(r.get("failover_slot").unwrap().level, Level::Ok);
    let failover: bool = db
        .client()
        .await
        .query_one(
            "select failover from pg_replication_slots where slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .get(0);
    assert!(failover);
}

#[tokio::test]
async fn least_privilege_role_script_is_enough_to_stream_and_read() {
    // Its own cluster: roles are cluster-wide, and another test runs the
    // same script on the shared one.
    let cluster = pg::PgCluster::start(pg::PgOptions::default()).await;
    let db = cluster.fresh_db().await;
    let out = std::process::Command::new("psql")
        .arg(&db.url)
        .args(["-v", "ON_ERROR_STOP=1", "-v", "password='r0le pw'", "-f"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/role.sql"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    db.exec("select pg_create_logical_replication_slot('projector_role', 'pgoutput')")
        .await;
    let url = Secret::new(db.url_as("projector", "r0le%20pw", "sslmode=disable"));
    let r = doctor(&url, "projector_role", "projector_events", false)
        .await
        .unwrap();
    assert!(!r.failed(), "{:#?}", r.findings);
    let client = projector::source::sql::connect(&url).await.unwrap();
    client
        .query("select count(*) from runtime.events", &[])
        .await
        .unwrap();
    // ... and nothing else: no writes.
    let e = client
        .execute("insert into runtime.events (stream_id, stream_seq, event_type, owner_id) values ('a', 1, 'b', 'c')", &[])
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("permission denied") || format!("{e:?}").contains("42501"),
        "{e:?}"
    );
    let mut s = projector::source::stream::ReplicationStream::start(
        &url,
        "projector_role",
        "projector_events",
        projector::event::Lsn(0),
        Default::default(),
    )
    .await
    .unwrap();
    s.send_status(
        projector::event::Lsn(0),
        projector::event::Lsn(0),
        projector::event::Lsn(0),
        false,
    )
    .await
    .unwrap();
    s.finish().await;
}
