#!/bin/sh
# Create Temporal's two databases and bring their schemas to the version this image ships.
# Safe to run on every `docker compose up`: `create` ignores an existing database,
# `setup-schema -v 0.0` skips a database already past 0.0, and `update-schema` applies
# only the versions it is missing, so an image upgrade migrates the schema here.
# The password reaches temporal-sql-tool through SQL_PASSWORD, not argv.
set -eu

: "${POSTGRES_SEEDS:?}" "${DB_PORT:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
schema_root=/etc/temporal/schema/postgresql/v12

sql_tool() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" "$@"
}

setup() {  # $1 database, $2 schema directory under $schema_root
  echo "schema: $1"
  sql_tool --db "$1" create
  sql_tool --db "$1" setup-schema -v 0.0
  sql_tool --db "$1" update-schema -d "$schema_root/$2/versioned"
}

setup "${DBNAME:-temporal}" temporal
setup "${VISIBILITY_DBNAME:-temporal_visibility}" visibility
echo "schema: done"
