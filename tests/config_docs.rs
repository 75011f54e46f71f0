//! README.md and docs/operations.md embed configuration tables generated
//! from the clap declarations (`config::reference`); this keeps them equal,
//! and checks that the example file in operations.md is one the service
//! accepts. Regenerate the tables with
//! `PROJECTOR_UPDATE_DOCS=1 cargo test --test main config_docs`.

use projector::config::{reference, CommonArgs};

const BEGIN: &str = "<!-- config:begin -->\n";
const END: &str = "<!-- config:end -->";

fn doc_path(name: &str) -> String {
    format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Compares the marked region of `name` with `table`, or rewrites it when
/// PROJECTOR_UPDATE_DOCS is set.
fn check_embedded(name: &str, table: &str) {
    let path = doc_path(name);
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find(BEGIN).expect("config:begin marker") + BEGIN.len();
    let end = doc[start..].find(END).expect("config:end marker") + start;
    if doc[start..end] == *table {
        return;
    }
    if std::env::var_os("PROJECTOR_UPDATE_DOCS").is_some() {
        // Renamed into place: another test of this file reads the docs.
        let updated = format!("{}{}{}", &doc[..start], table, &doc[end..]);
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, updated).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        return;
    }
    panic!(
        "{name}: the configuration table is stale: run \
         PROJECTOR_UPDATE_DOCS=1 cargo test --test main config_docs"
    );
}

#[test]
fn operations_doc_lists_every_setting_with_its_default() {
    check_embedded("docs/operations.md", &reference::markdown_table());
}

#[test]
fn readme_lists_every_setting_with_its_default() {
    check_embedded("README.md", &reference::readme_table());
}

#[test]
fn the_tables_show_each_default_once_per_setting() {
    let table = reference::markdown_table();
    for row in ["`--batch-max-events`", "`--status-interval-ms`", "`--slot`"] {
        assert_eq!(table.matches(row).count(), 1, "{row}");
    }
    assert!(table.contains("| `PROJECTOR_STATUS_INTERVAL_MS` | `status_interval_ms` | `1000` |"));
}

#[test]
fn the_example_file_in_operations_md_is_accepted() {
    let doc = std::fs::read_to_string(doc_path("docs/operations.md")).unwrap();
    let start = doc.find("```toml\n").expect("a ```toml example") + "```toml\n".len();
    let end = doc[start..].find("```").unwrap() + start;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("projector.toml");
    std::fs::write(&path, &doc[start..end]).unwrap();
    let args = CommonArgs {
        config: Some(path),
        ..Default::default()
    };
    let settings = args.resolve().unwrap();
    assert_eq!(settings.slot, "projector");
}

fn projector(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_projector"));
    cmd.args(args).env("RUST_LOG", "off");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// `--help` of a real subcommand shows every default the tables show.
#[test]
fn help_shows_each_default() {
    let out = projector(&["run", "--help"], &[]);
    let help = String::from_utf8(out.stdout).unwrap();
    for s in reference::settings() {
        assert!(help.contains(&s.flag), "{}", s.flag);
        if let Some(d) = s.default {
            assert!(help.contains(&format!("[default: {d}]")), "{}: {d}", s.flag);
        }
    }
}

/// The issue this closes: `PROJECTOR_STATUS_INTERVAL_MS=0` was accepted and
/// panicked in tokio's interval once streaming. Now `run` refuses it before
/// connecting, with exit code 2 and the fix.
#[test]
fn a_zero_status_interval_stops_run_before_it_connects() {
    let out = projector(
        &[
            "run",
            "--database-url",
            "postgres://u:hunter2@127.0.0.1:1/db",
        ],
        &[("PROJECTOR_STATUS_INTERVAL_MS", "0")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("PROJECTOR_STATUS_INTERVAL_MS") && stderr.contains("set 1 to 30000"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}
