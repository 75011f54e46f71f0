//! `projector setup`: findings with the SQL that fixes them; `--apply`
//! creates the publication and the slot idempotently.
#[path = "support/pg.rs"]
mod pg;

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
    assert_eq!(
        fix("slot"),
        "SELECT pg_create_logical_replication_slot('projector', 'pgoutput');"
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
