-- Least-privilege role for the projector: may log in and stream logical
-- replication, may read runtime.events (initial snapshot for rebuild/verify),
-- nothing else. Run as a superuser (or the table owner) after
-- 001_runtime_events.sql; replace the password, e.g. psql -v password="'...'".
-- On managed Postgres, replace REPLICATION with the provider's role
-- (Cloud SQL: ALTER ROLE projector WITH REPLICATION works for cloudsqlsuperuser
-- members; RDS: GRANT rds_replication TO projector).
\if :{?password}
\else
\set password '\'change-me\''
\endif
create role projector with login replication password :password;
grant usage on schema runtime to projector;
grant select on runtime.events to projector;
