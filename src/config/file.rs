//! The `--config` file: TOML with flat keys, each a setting's id (its flag
//! name in snake_case, `--batch-max-events` → `batch_max_events`), parsed
//! into the same section structs the flags fill.
//!
//! Errors give the file, line and column and the kind of mistake, never the
//! text there: the offending line may hold a password.

use std::path::Path;

use super::{reference, CommonArgs, ConfigError};

pub(super) fn load(path: &Path) -> Result<CommonArgs, ConfigError> {
    let file_error = |why| ConfigError::File {
        path: path.to_owned(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    parse(&text).map_err(file_error)
}

fn parse(text: &str) -> Result<CommonArgs, String> {
    // Syntax first, so that every later error is about a value.
    let table: toml::Table = text.parse().map_err(|e| describe(text, &e))?;
    let keys = reference::file_keys();
    if let Some(unknown) = table.keys().find(|k| !keys.contains(k)) {
        return Err(format!(
            "unknown key `{unknown}`; the keys are {}",
            keys.join(", ")
        ));
    }
    // Section by section: serde's `flatten` would buffer the table and lose
    // the position of a wrong value. A section ignores the others' keys.
    Ok(CommonArgs {
        config: None,
        source: section(text)?,
        convex: section(text)?,
        metrics: section(text)?,
        tuning: section(text)?,
    })
}

fn section<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| describe(text, &e))
}

/// Where the error is and what kind it is, without the text at that place.
fn describe(text: &str, e: &toml::de::Error) -> String {
    let kind = kind_of(e.message());
    match e.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("line {line}, column {column}: {kind}")
        }
        None => kind,
    }
}

/// serde words a wrong value `invalid type: string "…", expected usize`:
/// keep what was wrong and what was expected, drop the value. Anything else
/// is the TOML grammar's own description of a syntax error (what it
/// expected, a duplicated key's name), which quotes no value.
fn kind_of(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default();
    match (first.split_once(": "), first.rsplit_once(", expected ")) {
        (Some((what, _)), Some((_, expected))) => format!("{what}, expected {expected}"),
        _ => first.to_string(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keys_fill_every_section() {
        let args = parse(
            "database_url = \"postgres://u:pw@h/db\"\n\
             convex_url = \"https://h.convex.cloud\"\n\
             slot = \"s\"\n\
             metrics_addr = \"0.0.0.0:1\"\n\
             batch_max_events = 7\n\
             status_interval_ms = 250\n",
        )
        .unwrap();
        assert_eq!(args.source.slot.as_deref(), Some("s"));
        assert_eq!(
            args.source.database_url.unwrap().expose(),
            "postgres://u:pw@h/db"
        );
        assert_eq!(
            args.convex.convex_url.as_deref(),
            Some("https://h.convex.cloud")
        );
        assert_eq!(args.metrics.metrics_addr.as_deref(), Some("0.0.0.0:1"));
        assert_eq!(args.tuning.batch_max_events, Some(7));
        assert_eq!(args.tuning.status_interval_ms, Some(250));
    }

    #[test]
    fn an_unknown_key_is_named_with_the_valid_ones() {
        let e = parse("batch_max_event = 1\n").unwrap_err();
        assert!(e.contains("unknown key `batch_max_event`"), "{e}");
        assert!(
            e.contains("batch_max_events") && e.contains("database_url"),
            "{e}"
        );
        assert!(!e.contains("config,") && !e.contains(", config"), "{e}");
        let e = parse("[tuning]\nbatch_max_events = 1\n").unwrap_err();
        assert!(e.contains("unknown key `tuning`"), "{e}");
    }

    #[test]
    fn a_syntax_error_gives_line_and_column_but_not_the_line() {
        // An unterminated string, a missing `=`, a bare value, a duplicate.
        let cases = [
            "slot = \"s\"\ndatabase_url = \"postgres://u:hunter2@h/db\n",
            "slot = \"s\"\ndatabase_url \"postgres://u:hunter2@h/db\"\n",
            "slot = \"s\"\ndatabase_url = postgres://u:hunter2@h/db\n",
            "slot = \"s\"\nconvex_admin_key = \"hunter2\"\nconvex_admin_key = \"hunter2\"\n",
            "slot = \"s\"\nconvex_admin_key = 'hunter2\n",
        ];
        for text in cases {
            let e = parse(text).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(
                e.starts_with("line 2, column ") || e.starts_with("line 3, column "),
                "{e}"
            );
        }
    }

    #[test]
    fn a_wrong_type_gives_line_column_and_expected_type_but_not_the_value() {
        let e = parse("slot = \"s\"\nbatch_max_events = \"hunter2\"\n").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(e.starts_with("line 2, column 20: invalid type"), "{e}");
        assert!(e.contains("expected usize"), "{e}");
        let e = parse("convex_admin_key = 12345\n").unwrap_err();
        assert!(!e.contains("12345"), "{e}");
        assert!(e.contains("expected a string"), "{e}");
        let e = parse("cache_bytes = -1\n").unwrap_err();
        assert!(e.starts_with("line 1, column 15: invalid value"), "{e}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = load(Path::new("/nonexistent/projector.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/projector.toml"), "{e}");
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("a = 1\nbé = 2", 10), (2, 4));
        assert_eq!(line_column("x", 0), (1, 1));
    }
}
