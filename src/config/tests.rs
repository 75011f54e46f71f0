//! `CommonArgs` end to end: clap parsing, the file layer, resolution and
//! validation together.

use std::io::Write;

use clap::{Command, FromArgMatches};

use super::tuning::DEFAULT_BATCH_MAX_EVENTS;
use super::*;

/// `argv` parsed the way a subcommand parses it.
fn parse(argv: &[&str]) -> CommonArgs {
    let cmd = CommonArgs::augment_args(Command::new("projector"));
    let argv = std::iter::once("projector").chain(argv.iter().copied());
    let matches = cmd.try_get_matches_from(argv).unwrap();
    CommonArgs::from_arg_matches(&matches).unwrap()
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn secrets_never_print() {
    let args = parse(&[
        "--database-url",
        "postgres://u:hunter2@h/db",
        "--convex-admin-key",
        "hunter2",
    ]);
    assert!(!format!("{args:?}").contains("hunter2"));
    let settings = args.resolve().unwrap();
    assert!(!format!("{settings:?}").contains("hunter2"));
    assert_eq!(settings.convex_admin_key.unwrap().expose(), "hunter2");
}

#[test]
fn missing_connections_name_every_way_to_set_them() {
    let s = CommonArgs::default().resolve().unwrap();
    let e = s.database_url().unwrap_err().to_string();
    assert_eq!(
        e,
        "the source database is not set: pass --database-url, set DATABASE_URL or put \
         database_url in the --config file"
    );
    if std::env::var_os(SELF_HOSTED_URL_ENV).is_none() {
        let e = s.convex().unwrap_err().to_string();
        assert!(
            e.contains("--convex-url, set CONVEX_URL (or CONVEX_SELF_HOSTED_URL)"),
            "{e}"
        );
    }
}

#[test]
fn a_flag_beats_the_file_and_the_file_beats_the_default() {
    let f = config_file("slot = \"from_file\"\npublication = \"pub_file\"\nbatch_fill_ms = 9\n");
    let path = f.path().to_str().unwrap();
    let s = parse(&["--config", path, "--slot", "from_flag"])
        .resolve()
        .unwrap();
    assert_eq!(s.slot, "from_flag");
    assert_eq!(s.publication, "pub_file");
    assert_eq!(s.tuning.batch_fill, std::time::Duration::from_millis(9));
    assert_eq!(s.tuning.batch_max_events, DEFAULT_BATCH_MAX_EVENTS);
    assert_eq!(s.metrics_addr.to_string(), DEFAULT_METRICS_ADDR);
}

#[test]
fn a_bad_value_from_the_file_is_refused_like_a_flag() {
    let f = config_file("status_interval_ms = 0\n");
    let e = parse(&["--config", f.path().to_str().unwrap()])
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(e.contains("--status-interval-ms"), "{e}");
}

#[test]
fn a_zero_status_interval_flag_is_refused_not_a_panic_later() {
    let e = parse(&["--status-interval-ms", "0"])
        .resolve()
        .unwrap_err()
        .to_string();
    assert!(e.contains("PROJECTOR_STATUS_INTERVAL_MS"), "{e}");
}

#[test]
fn an_invalid_identifier_or_url_is_refused_at_resolve() {
    for argv in [
        &["--slot", "Bad-Slot"][..],
        &["--publication", "x y"],
        &["--convex-url", "happy-otter-123.convex.cloud"],
        &["--database-url", "mysql://h/db"],
        &["--metrics-addr", "nope"],
        &["--batch-max-bytes", "9000000"],
    ] {
        let e = parse(argv).resolve().unwrap_err().to_string();
        assert!(e.contains(argv[0]), "{argv:?}: {e}");
    }
}

/// The default `--help` shows is the one `resolve` applies: passing each
/// shown default explicitly gives the same settings as passing nothing.
#[test]
fn the_defaults_in_the_help_are_the_defaults_applied() {
    let baseline = parse(&[]).resolve().unwrap();
    let mut checked = 0;
    for s in reference::settings() {
        let Some(default) = s.default else { continue };
        let explicit = parse(&[s.flag.as_str(), default.as_str()])
            .resolve()
            .unwrap();
        assert_eq!(explicit, baseline, "{} [default: {default}]", s.flag);
        checked += 1;
    }
    assert_eq!(checked, 12, "settings with a default");
}

/// A new setting gets a default in its help, or is one of the connection
/// settings the commands ask for by name.
#[test]
fn every_setting_but_the_connections_has_a_default() {
    let without: Vec<String> = reference::settings()
        .into_iter()
        .filter(|s| s.default.is_none())
        .map(|s| s.id)
        .collect();
    assert_eq!(
        without,
        ["config", "database_url", "convex_url", "convex_admin_key"]
    );
}

/// The ids `Missing` errors use name real settings: a misspelt id would
/// print the bare id instead of the flag and variable.
#[test]
fn missing_errors_spell_out_flag_variable_and_file_key() {
    if std::env::var_os(SELF_HOSTED_KEY_ENV).is_some() {
        return; // the key is set after all
    }
    let key_only = Settings {
        convex_url: Some("https://h.convex.cloud".into()),
        ..CommonArgs::default().resolve().unwrap()
    };
    let e = key_only.convex().unwrap_err().to_string();
    assert!(
        e.contains("pass --convex-admin-key, set CONVEX_ADMIN_KEY (or CONVEX_SELF_HOSTED_ADMIN_KEY) or put convex_admin_key in the --config file"),
        "{e}"
    );
    let empty_key = Settings {
        convex_admin_key: Some(Secret::new("")),
        ..key_only
    };
    assert!(
        empty_key.convex().is_err(),
        "an empty key counts as missing"
    );
}
