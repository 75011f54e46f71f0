//! The deployment files agree with the code: every `projector_*` series
//! referenced by the alert rules and the Grafana dashboard is a metric of
//! `metrics::names`, every runbook link points at a heading of
//! docs/operations.md, and the external validators pass when installed
//! (promtool, docker-compose).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use projector::metrics::names;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every `projector_[a-z0-9_]+` token of a PromQL expression.
fn metric_tokens(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = expr[i..].find("projector_") {
        let start = i + off;
        let boundary = start == 0
            || !(b[start - 1].is_ascii_alphanumeric()
                || b[start - 1] == b'_'
                || b[start - 1] == b':');
        let mut end = start + "projector_".len();
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        if boundary {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

fn assert_known(source: &str, exprs: &[String]) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for e in exprs {
        for t in metric_tokens(e) {
            assert!(
                names::lookup(&t).is_some(),
                "{source}: `{t}` is not a metric in src/metrics/names.rs (expr: {e})"
            );
            used.insert(t);
        }
    }
    used
}

struct Rules {
    exprs: Vec<String>,
    records: BTreeSet<String>,
    runbooks: Vec<String>,
    alerts: BTreeSet<String>,
}

fn alert_rules() -> Rules {
    let doc: serde_norway::Value = serde_norway::from_str(&read("deploy/alerts.yml")).unwrap();
    let mut r = Rules {
        exprs: vec![],
        records: BTreeSet::new(),
        runbooks: vec![],
        alerts: BTreeSet::new(),
    };
    let groups = doc["groups"].as_sequence().expect("groups: a list");
    for g in groups {
        for rule in g["rules"].as_sequence().expect("rules: a list") {
            let expr = rule["expr"].as_str().expect("every rule has an expr");
            r.exprs.push(expr.to_string());
            if let Some(rec) = rule["record"].as_str() {
                r.records.insert(rec.to_string());
            }
            if let Some(a) = rule["alert"].as_str() {
                r.alerts.insert(a.to_string());
                let rb = rule["annotations"]["runbook"]
                    .as_str()
                    .unwrap_or_else(|| panic!("alert {a} has no runbook annotation"));
                r.runbooks.push(rb.to_string());
            }
        }
    }
    r
}

fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == "expr" || k == "query" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_string());
                    }
                }
                dashboard_exprs(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn tokenizer_finds_series_and_skips_recording_rules() {
    assert_eq!(
        metric_tokens("rate(projector_x_total[5m]) / projector:y:rate5m + my_projector_z"),
        vec!["projector_x_total".to_string()]
    );
}

#[test]
fn alert_rules_reference_only_real_metrics_and_recordings() {
    let r = alert_rules();
    let used = assert_known("deploy/alerts.yml", &r.exprs);
    for must in [
        "projector_slot_wal_status",
        "projector_slot_predicted_invalidation_seconds",
        "projector_slot_retained_wal_bytes",
        "projector_commit_to_ack_seconds_bucket",
        "projector_events_dead_lettered_total",
        "projector_convex_errors_total",
        "projector_ready",
    ] {
        assert!(used.contains(must), "alerts.yml should use {must}");
    }
    for a in [
        "ProjectorSlotLost",
        "ProjectorSlotInvalidationSoon",
        "ProjectorRetainedWALHigh",
        "ProjectorLagSLOFastBurn",
        "ProjectorLagSLOSlowBurn",
        "ProjectorDeadLetters",
        "ProjectorConvexErrors",
        "ProjectorNotReady",
        "ProjectorDown",
    ] {
        assert!(r.alerts.contains(a), "missing alert {a}");
    }
    // recording rules used by alerts are defined
    for e in &r.exprs {
        for tok in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if tok.starts_with("projector:") {
                assert!(r.records.contains(tok), "{tok} used but not recorded");
            }
        }
    }
    // the SLO bucket exists in the histogram
    assert!(projector::metrics::registry::COMMIT_TO_ACK_BUCKETS.contains(&1.0));
}

#[test]
fn runbook_links_point_at_headings() {
    let docs = read("docs/operations.md");
    let anchors: BTreeSet<String> = docs
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
                    ' ' => Some('-'),
                    _ => None,
                })
                .collect()
        })
        .collect();
    for rb in alert_rules().runbooks {
        let anchor = rb
            .strip_prefix("docs/operations.md#")
            .unwrap_or_else(|| panic!("runbook {rb} should be docs/operations.md#anchor"));
        assert!(
            anchors.contains(anchor),
            "no heading for #{anchor} in docs/operations.md"
        );
    }
}

#[test]
fn dashboard_references_only_real_metrics() {
    let v: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/projector.json")).unwrap();
    assert_eq!(v["uid"], "projector");
    let mut exprs = vec![];
    dashboard_exprs(&v, &mut exprs);
    assert!(exprs.len() > 10, "dashboard has too few queries");
    let used = assert_known("deploy/grafana/projector.json", &exprs);
    assert!(
        used.len() >= 20,
        "dashboard shows only {} metrics",
        used.len()
    );
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_config_and_rules() {
    if !on_path("promtool") {
        eprintln!("note: promtool not on PATH; skipped (apt-get install prometheus)");
        return;
    }
    let d = root().join("deploy");
    run_ok(
        Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(d.join("alerts.yml")),
    );
    run_ok(
        Command::new("promtool")
            .arg("check")
            .arg("config")
            .arg(d.join("prometheus.yml")),
    );
    // alert behaviour: deploy/alerts_test.yml feeds series and expects alerts
    run_ok(
        Command::new("promtool")
            .current_dir(&d)
            .args(["test", "rules", "alerts_test.yml"]),
    );
}

#[test]
fn compose_file_is_valid() {
    if !on_path("docker-compose") {
        eprintln!("note: docker-compose not on PATH; skipped (apt-get install docker-compose)");
        return;
    }
    let r = root();
    run_ok(
        Command::new("docker-compose")
            .current_dir(&r)
            .args(["-f", "docker-compose.yml", "config", "-q"])
            .env("INSTANCE_SECRET", "check-only")
            .env("POSTGRES_PASSWORD", "check-only")
            .env("PROJECTOR_DB_PASSWORD", "check-only"),
    );
    // both Convex images pinned to one release
    let compose = read("docker-compose.yml");
    let tags: BTreeSet<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: ghcr.io/get-convex/"))
        .filter_map(|l| l.split_once(':').map(|(_, t)| t))
        .collect();
    assert_eq!(tags.len(), 1, "convex images on different tags: {tags:?}");
    assert!(!compose.contains(":latest"));
}

/// Top-level entries that a `!name` line of the allow-list .dockerignore lets in.
fn docker_allowed() -> BTreeSet<String> {
    read(".dockerignore")
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .map(|l| l.trim_end_matches('/').to_string())
        .collect()
}

#[test]
fn dockerfile_is_multistage_non_root_and_locked() {
    let d = read("Dockerfile");
    for must in [
        "FROM rust:1-bookworm AS build",
        "cargo build --profile production --locked",
        "FROM debian:bookworm-slim",
        "ca-certificates",
        "USER 10001",
        "EXPOSE 9187",
        "ENTRYPOINT [\"projector\"]",
        "CMD [\"run\"]",
    ] {
        assert!(d.contains(must), "Dockerfile lacks {must:?}");
    }
    let allowed = docker_allowed();
    assert_eq!(
        read(".dockerignore").lines().find(|l| !l.starts_with('#')),
        Some("*")
    );
    for must in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(allowed.contains(must), ".dockerignore must let in {must}");
    }
}

/// Files pulled into the binary with include_str!/include_bytes! must be in
/// the image build context, or `docker build` fails where `cargo build` works.
#[test]
fn build_context_has_every_included_file() {
    let allowed = docker_allowed();
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for (i, _) in text.match_indices("include_") {
                let rest = &text[i..];
                let Some(open) = rest.find("(\"") else {
                    continue;
                };
                if !(rest.starts_with("include_str!") || rest.starts_with("include_bytes!")) {
                    continue;
                }
                let lit = &rest[open + 2..];
                let Some(close) = lit.find('"') else { continue };
                let target = p.parent().unwrap().join(&lit[..close]);
                let target = target.canonicalize().unwrap_or(target);
                let rel = target
                    .strip_prefix(root().canonicalize().unwrap())
                    .unwrap_or(&target);
                let top = rel
                    .components()
                    .next()
                    .unwrap()
                    .as_os_str()
                    .to_string_lossy()
                    .to_string();
                assert!(
                    allowed.contains(&top),
                    "{} includes {} but .dockerignore keeps {top}/ out of the image build",
                    p.display(),
                    rel.display()
                );
            }
        }
    }
}
