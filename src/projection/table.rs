//! The projection tables and the key of one document in them.

use std::fmt;
use std::sync::Arc;

/// A projection table in Convex (dead letters are separate: see
/// [`super::DeadLetter`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Runs,
    Timelines,
    Threads,
    Workers,
    Inboxes,
}

impl Table {
    pub const ALL: [Table; 5] = [
        Table::Runs,
        Table::Timelines,
        Table::Threads,
        Table::Workers,
        Table::Inboxes,
    ];

    /// The Convex table name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Table::Runs => "runs",
            Table::Timelines => "timelines",
            Table::Threads => "threads",
            Table::Workers => "workers",
            Table::Inboxes => "inboxes",
        }
    }

    pub fn parse(s: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Maps keyed by document, hashed with foldhash instead of SipHash
/// (hashing keys was ~8 % of a backlog drain's CPU). The hasher is seeded
/// per process, so stream ids in the event data cannot be chosen to collide.
pub type DocKeyMap<V> = std::collections::HashMap<DocKey, V, foldhash::fast::RandomState>;

/// One document: its table and its key (runId, threadId, workerId, userId).
///
/// The key is shared (`Arc<str>`): a batch, the cache, the write order and
/// the dispatch each hold the keys they work on, and a run's `runs` and
/// `timelines` keys are one string; cloning a key is a count, not a copy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocKey {
    pub table: Table,
    pub key: Arc<str>,
}

impl DocKey {
    pub fn new(table: Table, key: impl Into<Arc<str>>) -> Self {
        DocKey {
            table,
            key: key.into(),
        }
    }
}

impl fmt::Display for DocKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.table, self.key)
    }
}
