//! The event model: which event one writer writes next.
//!
//! A writer owns a disjoint share of the population (runs, workers, users)
//! and is the only writer of those streams, so it can number each stream
//! `1, 2, 3, …` itself. Every live entity is a small state machine with a
//! plausible lifecycle:
//!
//! ```text
//! run:    created(thread_id, title) → started → {step | usage}* → completed | failed | cancelled
//! worker: requested(repo?) → started(host) → heartbeat* → stopped | failed
//! user:   notification.created(id, title, body?) | notification.read(id of an unread one)
//! ```
//!
//! A run or worker that reaches its terminal event is replaced by a fresh
//! one (new id, `stream_seq` from 1), so the population keeps moving while
//! its size stays fixed. Malformed events (see [`super::malformed`]) take
//! the next `stream_seq` of a live stream, or event 1 of a one-off stream.
//!
//! Ids carry the writer index and a per-invocation prefix (`<prefix>-w<i>-…`)
//! so that writers never share a stream and repeated invocations against the
//! same database never collide; user streams (`user:u<k>`) are stable across
//! invocations and continue from the `stream_seq` already in the table
//! ([`Traffic::resume_users`]). Every object payload carries
//! `detail: "writer=<i>;…"` padding (reducers ignore unknown keys).

use std::collections::{HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use super::malformed::{MalformedKind, Target, LONG_ID_LEN};

/// Relative weights of the three event families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    pub(crate) run: u32,
    pub(crate) worker: u32,
    pub(crate) notification: u32,
}

impl Default for Mix {
    /// Mostly run traffic (steps and usage dominate a real runtime), with
    /// worker heartbeats and a trickle of notifications.
    fn default() -> Self {
        Mix {
            run: 6,
            worker: 3,
            notification: 1,
        }
    }
}

impl std::str::FromStr for Mix {
    type Err = String;
    /// `run=6,worker=3,notification=1` (any subset; missing families get 0;
    /// `notif` and `notifications` accepted).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut mix = Mix {
            run: 0,
            worker: 0,
            notification: 0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                format!("invalid mix entry {part:?}: expected family=weight, e.g. run=6,worker=3,notification=1")
            })?;
            let w: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("invalid weight {v:?} in --mix: expected a whole number"))?;
            match k.trim() {
                "run" | "runs" => mix.run = w,
                "worker" | "workers" => mix.worker = w,
                "notification" | "notifications" | "notif" => mix.notification = w,
                other => {
                    return Err(format!(
                        "unknown family {other:?} in --mix: use run, worker, notification"
                    ))
                }
            }
        }
        if mix.run + mix.worker + mix.notification == 0 {
            return Err("--mix needs at least one weight greater than 0".into());
        }
        Ok(mix)
    }
}

/// Whether an event follows the contract, and if not, how it breaks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventClass {
    Valid,
    Malformed(MalformedKind),
}

/// One row to insert into `runtime.events` (`seq` and `occurred_at` are
/// assigned by the database).
#[derive(Clone, Debug)]
pub(crate) struct PlannedEvent {
    pub(crate) stream_id: String,
    pub(crate) stream_seq: i64,
    pub(crate) event_type: &'static str,
    pub(crate) owner_id: String,
    /// JSON text of the payload.
    pub(crate) payload: String,
    pub(crate) class: EventClass,
}

/// One writer's share of the workload.
#[derive(Clone, Debug)]
pub(crate) struct TrafficConfig {
    pub(crate) writer: usize,
    pub(crate) writers: usize,
    /// Live runs / workers kept by the whole load (this writer gets its share).
    pub(crate) runs: usize,
    pub(crate) workers: usize,
    /// Users in the whole load: owners of runs/workers (any writer), and
    /// notification streams (partitioned by `k % writers`).
    pub(crate) users: usize,
    pub(crate) mix: Mix,
    pub(crate) payload_bytes: usize,
    pub(crate) malformed_fraction: f64,
    pub(crate) id_prefix: String,
    pub(crate) seed: u64,
}

#[derive(Debug)]
enum RunPhase {
    New,
    Created,
    Running { remaining: u32 },
}

#[derive(Debug)]
struct Run {
    id: String,
    owner: String,
    seq: i64,
    phase: RunPhase,
}

#[derive(Debug)]
enum WorkerPhase {
    New,
    Requested,
    Running { remaining: u32 },
}

#[derive(Debug)]
struct Worker {
    id: String,
    owner: String,
    seq: i64,
    phase: WorkerPhase,
}

#[derive(Debug)]
struct User {
    id: String,
    seq: i64,
    /// Ids of notifications created by this invocation and not yet read.
    unread: VecDeque<String>,
}

/// The user id of user number `k` (stable across invocations; the owner id
/// a client's JWT subject must match to see the documents).
pub(crate) fn user_id(k: usize) -> String {
    format!("u{k}")
}

fn share(total: usize, writer: usize, writers: usize) -> usize {
    total / writers + usize::from(writer < total % writers)
}

const STEP_NAMES: [&str; 6] = ["plan", "search", "read", "edit", "test", "review"];
const REPOS: [&str; 4] = ["acme/web", "acme/api", "acme/mobile", "acme/infra"];
const TOPICS: [&str; 6] = [
    "Fix flaky login test",
    "Summarise incident 4121",
    "Refactor billing module",
    "Draft release notes",
    "Investigate slow query",
    "Upgrade dependencies",
];

/// The per-writer event model. Deterministic for a given config (seed).
pub(crate) struct Traffic {
    cfg: TrafficConfig,
    rng: StdRng,
    runs: Vec<Run>,
    workers: Vec<Worker>,
    users: Vec<User>,
    next_id: u64,
    malformed_cursor: usize,
    filler: String,
}

impl Traffic {
    pub(crate) fn new(cfg: TrafficConfig) -> Self {
        let writers = cfg.writers.max(1);
        let w = cfg.writer;
        let rng =
            StdRng::seed_from_u64(cfg.seed ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let users = (0..cfg.users)
            .filter(|k| k % writers == w)
            .map(|k| User {
                id: user_id(k),
                seq: 0,
                unread: VecDeque::new(),
            })
            .collect();
        let filler: String = "lorem ipsum dolor sit amet "
            .chars()
            .cycle()
            .take(cfg.payload_bytes)
            .collect();
        let mut t = Traffic {
            rng,
            runs: Vec::new(),
            workers: Vec::new(),
            users,
            next_id: 0,
            malformed_cursor: w,
            filler,
            cfg,
        };
        for _ in 0..share(t.cfg.runs, w, writers) {
            let r = t.new_run();
            t.runs.push(r);
        }
        for _ in 0..share(t.cfg.workers, w, writers) {
            let k = t.new_worker();
            t.workers.push(k);
        }
        t
    }

    /// Stream ids of this writer's user streams, for [`Self::resume_users`].
    pub(crate) fn user_stream_ids(&self) -> Vec<String> {
        self.users
            .iter()
            .map(|u| format!("user:{}", u.id))
            .collect()
    }

    /// Continues user streams after the `stream_seq` already written by an
    /// earlier invocation (`max_seq` by stream id).
    pub(crate) fn resume_users(&mut self, max_seq: &HashMap<String, i64>) {
        for u in &mut self.users {
            if let Some(s) = max_seq.get(&format!("user:{}", u.id)) {
                u.seq = *s;
            }
        }
    }

    /// True when this writer has something to write (a family with weight
    /// and population).
    pub(crate) fn can_write(&self) -> bool {
        self.family_weights().iter().any(|w| *w > 0)
    }

    fn family_weights(&self) -> [u32; 3] {
        let m = self.cfg.mix;
        [
            if self.runs.is_empty() { 0 } else { m.run },
            if self.workers.is_empty() { 0 } else { m.worker },
            if self.users.is_empty() {
                0
            } else {
                m.notification
            },
        ]
    }

    fn fresh_id(&mut self, tag: char) -> String {
        self.next_id += 1;
        format!(
            "{}-w{}-{}{}",
            self.cfg.id_prefix, self.cfg.writer, tag, self.next_id
        )
    }

    fn random_owner(&mut self) -> String {
        user_id(self.rng.gen_range(0..self.cfg.users.max(1)))
    }

    fn new_run(&mut self) -> Run {
        Run {
            id: self.fresh_id('r'),
            owner: self.random_owner(),
            seq: 0,
            phase: RunPhase::New,
        }
    }

    fn new_worker(&mut self) -> Worker {
        Worker {
            id: self.fresh_id('k'),
            owner: self.random_owner(),
            seq: 0,
            phase: WorkerPhase::New,
        }
    }

    /// A thread of the owner's small pool (threads span runs and writers).
    fn thread_for(&mut self, owner: &str) -> String {
        format!("t-{owner}-{}", self.rng.gen_range(0..4))
    }

    fn detail(&self) -> String {
        format!("writer={};{}", self.cfg.writer, self.filler)
    }

    fn payload(&self, mut fields: Map<String, Value>) -> String {
        fields.insert("detail".into(), Value::String(self.detail()));
        Value::Object(fields).to_string()
    }

    /// The next event of this writer, or `None` if it has nothing to write
    /// (no family with both weight and population).
    pub(crate) fn next_event(&mut self) -> Option<PlannedEvent> {
        if self.cfg.malformed_fraction > 0.0 && self.rng.gen::<f64>() < self.cfg.malformed_fraction
        {
            if let Some(e) = self.next_malformed() {
                return Some(e);
            }
        }
        let weights = self.family_weights();
        let total: u32 = weights.iter().sum();
        if total == 0 {
            return None;
        }
        let mut pick = self.rng.gen_range(0..total);
        let family = weights
            .iter()
            .position(|w| {
                if pick < *w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or(0);
        Some(match family {
            0 => self.next_run_event(),
            1 => self.next_worker_event(),
            _ => self.next_notification_event(),
        })
    }

    fn next_run_event(&mut self) -> PlannedEvent {
        let i = self.rng.gen_range(0..self.runs.len());
        let (event_type, fields, terminal) = match self.runs[i].phase {
            RunPhase::New => {
                let owner = self.runs[i].owner.clone();
                let thread = self.thread_for(&owner);
                let topic = TOPICS[self.rng.gen_range(0..TOPICS.len())];
                let mut f = Map::new();
                f.insert("thread_id".into(), json!(thread));
                if self.rng.gen_bool(0.9) {
                    f.insert("title".into(), json!(topic));
                }
                self.runs[i].phase = RunPhase::Created;
                ("run.created", f, false)
            }
            RunPhase::Created => {
                let remaining = self.rng.gen_range(2..16);
                self.runs[i].phase = RunPhase::Running { remaining };
                ("run.started", Map::new(), false)
            }
            RunPhase::Running { remaining } if remaining > 0 => {
                self.runs[i].phase = RunPhase::Running {
                    remaining: remaining - 1,
                };
                let mut f = Map::new();
                if self.rng.gen_bool(0.6) {
                    if self.rng.gen_bool(0.85) {
                        f.insert(
                            "name".into(),
                            json!(STEP_NAMES[self.rng.gen_range(0..STEP_NAMES.len())]),
                        );
                    }
                    ("run.step", f, false)
                } else {
                    f.insert(
                        "input_tokens".into(),
                        json!(self.rng.gen_range(0..20_000u64)),
                    );
                    f.insert(
                        "output_tokens".into(),
                        json!(self.rng.gen_range(0..4_000u64)),
                    );
                    ("run.usage", f, false)
                }
            }
            RunPhase::Running { .. } => {
                let roll: f64 = self.rng.gen();
                let mut f = Map::new();
                if roll < 0.8 {
                    ("run.completed", f, true)
                } else if roll < 0.92 {
                    f.insert("error".into(), json!("tool call timed out after 30s"));
                    ("run.failed", f, true)
                } else {
                    if self.rng.gen_bool(0.5) {
                        f.insert("reason".into(), json!("cancelled by user"));
                    }
                    ("run.cancelled", f, true)
                }
            }
        };
        let payload = self.payload(fields);
        let run = &mut self.runs[i];
        run.seq += 1;
        let e = PlannedEvent {
            stream_id: format!("run:{}", run.id),
            stream_seq: run.seq,
            event_type,
            owner_id: run.owner.clone(),
            payload,
            class: EventClass::Valid,
        };
        if terminal {
            self.runs[i] = self.new_run();
        }
        e
    }

    fn next_worker_event(&mut self) -> PlannedEvent {
        let i = self.rng.gen_range(0..self.workers.len());
        let mut f = Map::new();
        let (event_type, terminal) = match self.workers[i].phase {
            WorkerPhase::New => {
                if self.rng.gen_bool(0.8) {
                    f.insert(
                        "repo".into(),
                        json!(REPOS[self.rng.gen_range(0..REPOS.len())]),
                    );
                }
                self.workers[i].phase = WorkerPhase::Requested;
                ("worker.requested", false)
            }
            WorkerPhase::Requested => {
                f.insert(
                    "host".into(),
                    json!(format!("host-{}.pool.internal", self.rng.gen_range(0..64))),
                );
                let remaining = self.rng.gen_range(3..30);
                self.workers[i].phase = WorkerPhase::Running { remaining };
                ("worker.started", false)
            }
            WorkerPhase::Running { remaining } if remaining > 0 => {
                self.workers[i].phase = WorkerPhase::Running {
                    remaining: remaining - 1,
                };
                ("worker.heartbeat", false)
            }
            WorkerPhase::Running { .. } => {
                if self.rng.gen_bool(0.85) {
                    if self.rng.gen_bool(0.5) {
                        f.insert("reason".into(), json!("idle timeout"));
                    }
                    ("worker.stopped", true)
                } else {
                    f.insert("error".into(), json!("container exited with code 137"));
                    ("worker.failed", true)
                }
            }
        };
        let payload = self.payload(f);
        let worker = &mut self.workers[i];
        worker.seq += 1;
        let e = PlannedEvent {
            stream_id: format!("worker:{}", worker.id),
            stream_seq: worker.seq,
            event_type,
            owner_id: worker.owner.clone(),
            payload,
            class: EventClass::Valid,
        };
        if terminal {
            self.workers[i] = self.new_worker();
        }
        e
    }

    fn next_notification_event(&mut self) -> PlannedEvent {
        let i = self.rng.gen_range(0..self.users.len());
        let read = !self.users[i].unread.is_empty() && self.rng.gen_bool(0.35);
        let mut f = Map::new();
        let event_type = if read {
            // Read a random unread one (not always the oldest).
            let n = self.users[i].unread.len();
            let j = self.rng.gen_range(0..n);
            let id = self.users[i].unread.remove(j).unwrap_or_default();
            f.insert("notification_id".into(), json!(id));
            "notification.read"
        } else {
            let id = self.fresh_id('n');
            f.insert("notification_id".into(), json!(id));
            f.insert(
                "title".into(),
                json!(TOPICS[self.rng.gen_range(0..TOPICS.len())]),
            );
            if self.rng.gen_bool(0.7) {
                f.insert(
                    "body".into(),
                    json!("Your run finished; open it to see the result."),
                );
            }
            let unread = &mut self.users[i].unread;
            unread.push_back(id);
            // The inbox keeps the newest 50; reads of older ones are no-ops anyway.
            if unread.len() > 50 {
                unread.pop_front();
            }
            "notification.created"
        };
        let payload = self.payload(f);
        let user = &mut self.users[i];
        user.seq += 1;
        PlannedEvent {
            stream_id: format!("user:{}", user.id),
            stream_seq: user.seq,
            event_type,
            owner_id: user.id.clone(),
            payload,
            class: EventClass::Valid,
        }
    }

    /// The next malformed kind in the cycle whose target this writer has.
    fn next_malformed(&mut self) -> Option<PlannedEvent> {
        let n = MalformedKind::ALL.len();
        for _ in 0..n {
            let kind = MalformedKind::ALL[self.malformed_cursor % n];
            self.malformed_cursor += 1;
            let available = match kind.target() {
                Target::Run => !self.runs.is_empty(),
                Target::User => !self.users.is_empty(),
                Target::FreshRun => true,
            };
            if available {
                return Some(self.malformed(kind));
            }
        }
        None
    }

    fn malformed(&mut self, kind: MalformedKind) -> PlannedEvent {
        let detail = self.detail();
        match kind.target() {
            Target::Run => {
                let i = self.rng.gen_range(0..self.runs.len());
                let ev = kind.event("", &detail);
                let run = &mut self.runs[i];
                run.seq += 1;
                PlannedEvent {
                    stream_id: format!("run:{}", run.id),
                    stream_seq: run.seq,
                    event_type: ev.event_type,
                    owner_id: run.owner.clone(),
                    payload: ev.payload,
                    class: EventClass::Malformed(kind),
                }
            }
            Target::User => {
                let i = self.rng.gen_range(0..self.users.len());
                let ev = kind.event("", &detail);
                let user = &mut self.users[i];
                user.seq += 1;
                PlannedEvent {
                    stream_id: format!("user:{}", user.id),
                    stream_seq: user.seq,
                    event_type: ev.event_type,
                    owner_id: user.id.clone(),
                    payload: ev.payload,
                    class: EventClass::Malformed(kind),
                }
            }
            Target::FreshRun => {
                let mut id = self.fresh_id('x');
                if kind == MalformedKind::LongId {
                    while id.len() < LONG_ID_LEN {
                        id.push('x');
                    }
                }
                let owner = self.random_owner();
                let thread = self.thread_for(&owner);
                let ev = kind.event(&thread, &detail);
                PlannedEvent {
                    stream_id: format!("run:{id}"),
                    stream_seq: 1,
                    event_type: ev.event_type,
                    owner_id: owner,
                    payload: ev.payload,
                    class: EventClass::Malformed(kind),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn cfg(writer: usize) -> TrafficConfig {
        TrafficConfig {
            writer,
            writers: 3,
            runs: 10,
            workers: 5,
            users: 7,
            mix: Mix::default(),
            payload_bytes: 150,
            malformed_fraction: 0.0,
            id_prefix: "t".into(),
            seed: 42,
        }
    }

    #[test]
    fn streams_are_contiguous_and_lifecycles_plausible() {
        let mut t = Traffic::new(cfg(1));
        let mut last: HashMap<String, (i64, &'static str)> = HashMap::new();
        for _ in 0..5000 {
            let e = t.next_event().unwrap();
            let prev = last.get(&e.stream_id).map(|p| p.0).unwrap_or(0);
            assert_eq!(e.stream_seq, prev + 1, "{}", e.stream_id);
            if e.stream_seq == 1 && e.stream_id.starts_with("run:") {
                assert_eq!(e.event_type, "run.created");
            }
            if e.stream_seq == 1 && e.stream_id.starts_with("worker:") {
                assert_eq!(e.event_type, "worker.requested");
            }
            if let Some((_, t)) = last.get(&e.stream_id) {
                assert!(
                    !matches!(
                        *t,
                        "run.completed"
                            | "run.failed"
                            | "run.cancelled"
                            | "worker.stopped"
                            | "worker.failed"
                    ),
                    "event after terminal on {}",
                    e.stream_id
                );
            }
            let v: Value = serde_json::from_str(&e.payload).unwrap();
            assert!(v["detail"].as_str().unwrap().starts_with("writer=1;"));
            last.insert(e.stream_id.clone(), (e.stream_seq, e.event_type));
        }
        let types: HashSet<_> = last.values().map(|v| v.1).collect();
        assert!(types.len() > 5);
    }

    #[test]
    fn writers_never_share_streams() {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for w in 0..3 {
            let mut c = cfg(w);
            c.malformed_fraction = 0.3;
            let mut t = Traffic::new(c);
            for _ in 0..2000 {
                let e = t.next_event().unwrap();
                let owner = *seen.entry(e.stream_id.clone()).or_insert(w);
                assert_eq!(owner, w, "{}", e.stream_id);
            }
        }
    }

    #[test]
    fn mix_parses_and_rejects() {
        let m: Mix = "run=1, worker=0,notification=2".parse().unwrap();
        assert_eq!((m.run, m.worker, m.notification), (1, 0, 2));
        assert!("run=0".parse::<Mix>().is_err());
        assert!("jobs=3".parse::<Mix>().is_err());
        assert!("run".parse::<Mix>().is_err());
    }
}
