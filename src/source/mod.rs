//! Postgres side: replication client, pgoutput decoder, slot administration.
