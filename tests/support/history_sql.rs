//! Fast, valid event history written with one `INSERT ... SELECT
//! generate_series(...)`: many events over few documents (the local
//! backend scans whole tables per lookup, so tests keep tables small).
//! Use with `use crate::support::history_sql;`.
#![allow(dead_code)]

/// Shape of the history.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Events in total (70% run streams, 20% worker streams, 10% user streams).
    pub events: u64,
    pub runs: u64,
    pub workers: u64,
    pub users: u64,
    /// Threads the runs are spread over.
    pub threads: u64,
}

/// The SQL that appends `shape.events` valid events. `prefix` keeps ids
/// apart when called more than once on one database; `seq_offset` continues
/// the per-stream sequence of an earlier call with the same prefix and shape
/// (pass the previous total events).
pub fn insert_sql(prefix: &str, shape: Shape, seq_offset: u64) -> String {
    let Shape {
        events,
        runs,
        workers,
        users,
        threads,
    } = shape;
    let run_n = events * 7 / 10;
    let worker_n = events * 2 / 10;
    let user_n = events - run_n - worker_n;
    let (ro, wo, uo) = (
        seq_offset * 7 / 10,
        seq_offset * 2 / 10,
        seq_offset - seq_offset * 7 / 10 - seq_offset * 2 / 10,
    );
    format!(
        "INSERT INTO runtime.events (stream_id, stream_seq, event_type, owner_id, payload, occurred_at)
SELECT stream_id, stream_seq, event_type, owner_id, payload::jsonb,
       timestamptz '2026-01-01 00:00:00+00' + (ord * interval '1 millisecond')
FROM (
  SELECT i AS ord, 'run:{prefix}r' || (i % {runs}) AS stream_id, (i / {runs}) + 1 AS stream_seq,
         CASE WHEN i / {runs} = 0 THEN 'run.created'
              WHEN i / {runs} = 1 THEN 'run.started'
              WHEN i % 2 = 0 THEN 'run.step' ELSE 'run.usage' END AS event_type,
         'u' || (i % {users}) AS owner_id,
         CASE WHEN i / {runs} = 0 THEN json_build_object('thread_id', '{prefix}t' || (i % {threads}), 'title', 'run ' || i)::text
              WHEN i / {runs} = 1 THEN '{{}}'
              WHEN i % 2 = 0 THEN json_build_object('name', 'step ' || (i / {runs}))::text
              ELSE json_build_object('input_tokens', i % 1000, 'output_tokens', i % 77)::text END AS payload
  FROM generate_series({ro}::bigint, {ro} + {run_n} - 1) AS i
  UNION ALL
  SELECT i * 3.5, 'worker:{prefix}w' || (i % {workers}), (i / {workers}) + 1,
         CASE WHEN i / {workers} = 0 THEN 'worker.requested'
              WHEN i / {workers} = 1 THEN 'worker.started' ELSE 'worker.heartbeat' END,
         'u' || (i % {users}),
         CASE WHEN i / {workers} = 0 THEN json_build_object('repo', 'repo' || i)::text
              WHEN i / {workers} = 1 THEN json_build_object('host', 'host' || i)::text
              ELSE '{{}}' END
  FROM generate_series({wo}::bigint, {wo} + {worker_n} - 1) AS i
  UNION ALL
  SELECT i * 7, 'user:u' || (i % {users}) || '{prefix}', (i / {users}) + 1,
         CASE WHEN (i / {users}) % 2 = 0 THEN 'notification.created' ELSE 'notification.read' END,
         'u' || (i % {users}),
         CASE WHEN (i / {users}) % 2 = 0
              THEN json_build_object('notification_id', 'n' || (i / {users}), 'title', 'note ' || i)::text
              ELSE json_build_object('notification_id', 'n' || ((i / {users}) - 1))::text END
  FROM generate_series({uo}::bigint, {uo} + {user_n} - 1) AS i
) AS h
ORDER BY ord"
    )
}
