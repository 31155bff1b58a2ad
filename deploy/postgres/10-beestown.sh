#!/bin/sh
# BeesTown's own database and a role that owns only it, so the workers (sandbox hosts
# included) never hold the superuser password that guards Temporal's databases.
# The postgres image runs this once, when it initialises an empty data directory.
set -eu

: "${BEESTOWN_DB_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  --set=pw="$BEESTOWN_DB_PASSWORD" <<'SQL'
CREATE ROLE beestown LOGIN PASSWORD :'pw';
CREATE DATABASE beestown OWNER beestown;
REVOKE ALL ON DATABASE beestown FROM PUBLIC;
SQL
