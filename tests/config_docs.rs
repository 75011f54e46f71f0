//! README.md and docs/operations.md embed configuration tables generated
//! from the clap declarations (`config::reference`); this keeps them equal,
//! and checks that the example file in operations.md is one the service
//! accepts. Regenerate the tables with
//! `PROJECTOR_UPDATE_DOCS=1 cargo test --test config_docs`.

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
        let updated = format!("{}{}{}", &doc[..start], table, &doc[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "{name}: the configuration table is stale: run \
         PROJECTOR_UPDATE_DOCS=1 cargo test --test config_docs"
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
