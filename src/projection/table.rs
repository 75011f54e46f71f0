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

    pub(crate) fn parse(s: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The table of an event's own stream (a run, a worker, a user's
    /// inbox): it records the event's stream position, so when a batch must
    /// be split its writes go last (a crash between the parts then replays
    /// the event into the documents that lack it; see `pipeline::dispatch`).
    pub(crate) const fn is_stream_table(self) -> bool {
        matches!(self, Table::Runs | Table::Workers | Table::Inboxes)
    }
}

/// Every table of the Convex app (`convex/schema.ts`), mirrored once on
/// the Convex side in `convex/tables.ts` (a test checks that the two agree).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvexTable {
    Projection(Table),
    DeadLetters,
    ProjectorState,
}

impl ConvexTable {
    pub(crate) const ALL: [ConvexTable; 7] = [
        ConvexTable::Projection(Table::Runs),
        ConvexTable::Projection(Table::Timelines),
        ConvexTable::Projection(Table::Threads),
        ConvexTable::Projection(Table::Workers),
        ConvexTable::Projection(Table::Inboxes),
        ConvexTable::DeadLetters,
        ConvexTable::ProjectorState,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            ConvexTable::Projection(t) => t.as_str(),
            ConvexTable::DeadLetters => "deadLetters",
            ConvexTable::ProjectorState => "projectorState",
        }
    }
}

impl From<Table> for ConvexTable {
    fn from(t: Table) -> Self {
        ConvexTable::Projection(t)
    }
}

impl fmt::Display for ConvexTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `convex/tables.ts` lists the same tables in the same order.
    #[test]
    fn the_convex_side_names_the_same_tables() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/convex/tables.ts");
        let text = std::fs::read_to_string(path).expect("convex/tables.ts");
        let list = text
            .split("TABLES = [")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .expect("a TABLES = [...] literal");
        let names: Vec<&str> = list
            .split(',')
            .map(|s| s.trim().trim_matches('"'))
            .filter(|s| !s.is_empty())
            .collect();
        let ours: Vec<&str> = ConvexTable::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names, ours);
        for t in Table::ALL {
            assert_eq!(Table::parse(t.as_str()), Some(t));
        }
    }
}
