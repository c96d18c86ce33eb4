-- sanduan central store on PostgreSQL: a role and a database. Run as a superuser:
--   psql -f deploy/postgres/setup.sql
-- then `sanduan central migrate --config central.toml` creates the schema.
CREATE ROLE sanduan LOGIN PASSWORD 'change-me';
CREATE DATABASE sanduan OWNER sanduan;
