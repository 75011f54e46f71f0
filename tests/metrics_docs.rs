//! docs/operations.md embeds the metrics reference generated from
//! `metrics::names`; this keeps them equal. Regenerate with
//! `PROJECTOR_UPDATE_DOCS=1 cargo test --test main metrics_docs`.

use projector::metrics::names;

const BEGIN: &str = "<!-- metrics:begin -->\n";
const END: &str = "<!-- metrics:end -->";

#[test]
fn operations_doc_lists_every_metric() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let start = doc.find(BEGIN).expect("metrics:begin marker") + BEGIN.len();
    let end = doc[start..].find(END).expect("metrics:end marker") + start;
    let table = names::markdown_table();
    if doc[start..end] == table {
        return;
    }
    if std::env::var_os("PROJECTOR_UPDATE_DOCS").is_some() {
        let updated = format!("{}{}{}", &doc[..start], table, &doc[end..]);
        std::fs::write(path, updated).unwrap();
        return;
    }
    panic!("docs/operations.md metrics table is stale: run PROJECTOR_UPDATE_DOCS=1 cargo test --test main metrics_docs");
}
