-- Least-privilege role for the projector: may log in and stream logical
-- replication, may read runtime.events (initial snapshot for rebuild/verify),
-- nothing else. Run as a superuser (or the table owner) after
-- 001_runtime_events.sql. The password comes from the environment variable
-- PROJECTOR_DB_PASSWORD (never a process argument), or from
-- psql -v password="'...'" (an SQL literal); there is no default.
-- On managed Postgres, replace REPLICATION with the provider's role
-- (Cloud SQL: ALTER ROLE projector WITH REPLICATION works for cloudsqlsuperuser
-- members; RDS: GRANT rds_replication TO projector).
\if :{?password}
\else
\getenv projector_db_password PROJECTOR_DB_PASSWORD
\if :{?projector_db_password}
\set password :'projector_db_password'
\unset projector_db_password
\else
do $$ begin raise exception 'role.sql needs a password: set PROJECTOR_DB_PASSWORD in the environment'; end $$;
\quit
\endif
\endif
create role projector with login replication password :password;
grant usage on schema runtime to projector;
grant select on runtime.events to projector;
