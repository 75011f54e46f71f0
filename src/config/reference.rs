//! The configuration reference, read back from the clap declarations of
//! [`CommonArgs`]: the tables in docs/operations.md and README.md (kept
//! equal by `tests/config_docs.rs`), the file's keys, and how errors name a
//! setting. Nothing here restates a flag, variable or default.

use clap::{Arg, Args, Command};

use super::CommonArgs;

/// How [`super::with_default`] appends a default to a help text; clap's own
/// notation, read back here.
pub(super) const DEFAULT_MARK: &str = " [default: ";

/// One setting as an operator sees it.
#[derive(Clone, Debug)]
pub struct SettingDoc {
    /// The field name: the file key and the id errors use.
    pub(crate) id: String,
    pub flag: String,
    pub(crate) env: Option<String>,
    pub default: Option<String>,
    /// The help text without the default.
    pub(crate) help: String,
}

fn command() -> Command {
    CommonArgs::augment_args(Command::new("projector"))
}

fn doc_of(arg: &Arg) -> SettingDoc {
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    let (help, default) = match help.rsplit_once(DEFAULT_MARK) {
        Some((text, rest)) => (text.to_string(), rest.strip_suffix(']').map(str::to_string)),
        None => (help, None),
    };
    SettingDoc {
        id: arg.get_id().to_string(),
        flag: arg.get_long().map(|l| format!("--{l}")).unwrap_or_default(),
        env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
        default,
        help,
    }
}

/// Every setting, in declaration order, `--config` first.
pub fn settings() -> Vec<SettingDoc> {
    command().get_arguments().map(doc_of).collect()
}

/// The keys the `--config` file may hold: every setting but `config`.
pub(super) fn file_keys() -> Vec<String> {
    command()
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .filter(|id| id != "config")
        .collect()
}

/// `--batch-max-bytes (PROJECTOR_BATCH_MAX_BYTES, batch_max_bytes in the
/// --config file)`, from the setting's id.
pub(crate) fn spelled(id: &str) -> String {
    match settings().into_iter().find(|s| s.id == id) {
        Some(s) => match s.env {
            Some(env) => format!("{} ({env}, {id} in the --config file)", s.flag),
            None => format!("{} ({id} in the --config file)", s.flag),
        },
        None => id.to_string(),
    }
}

/// `pass --convex-url, set CONVEX_URL (or CONVEX_SELF_HOSTED_URL) or put
/// convex_url in the --config file`.
pub(crate) fn how_to_set(id: &str, alias: Option<&str>) -> String {
    let Some(s) = settings().into_iter().find(|s| s.id == id) else {
        return format!("set {id}");
    };
    let env = match (s.env, alias) {
        (Some(env), Some(alias)) => format!(", set {env} (or {alias})"),
        (Some(env), None) => format!(", set {env}"),
        _ => String::new(),
    };
    format!("pass {}{env} or put {id} in the --config file", s.flag)
}

/// A help text as a table cell: `|` would end the cell, `<name>` would be
/// read as HTML.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "\\<")
        .replace('>', "\\>")
        .replace('\n', " ")
}

fn code(s: &str) -> String {
    format!("`{s}`")
}

/// The table of docs/operations.md: every setting with its meaning.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| flag | environment | file key | default | meaning |\n|---|---|---|---|---|\n",
    );
    for s in settings() {
        let key = if s.id == "config" {
            "—".to_string()
        } else {
            code(&s.id)
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            code(&s.flag),
            s.env.as_deref().map_or("—".to_string(), code),
            key,
            s.default.as_deref().map_or("none".to_string(), code),
            cell(&s.help),
        ));
    }
    out
}

/// The short table of README.md: where each setting comes from and its
/// default.
pub fn readme_table() -> String {
    let mut out = String::from("| flag | environment | default |\n|---|---|---|\n");
    for s in settings() {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            code(&s.flag),
            s.env.as_deref().map_or("—".to_string(), code),
            s.default.as_deref().map_or("none".to_string(), code),
        ));
    }
    out
}
