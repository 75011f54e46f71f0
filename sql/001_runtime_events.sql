-- runtime.events: the append-only event log (DESIGN §2) and its publication.
create schema if not exists runtime;
create table runtime.events (
  seq         bigint generated always as identity primary key, -- global, NOT commit order
  stream_id   text        not null,  -- 'run:<id>' | 'worker:<id>' | 'user:<id>'
  stream_seq  bigint      not null,  -- 1,2,3,... per stream, single writer per stream
  event_type  text        not null,
  owner_id    text        not null,  -- user the stream belongs to; scopes client reads
  payload     jsonb       not null default '{}',
  occurred_at timestamptz not null default now(),
  unique (stream_id, stream_seq)
);
create publication projector_events for table runtime.events;
