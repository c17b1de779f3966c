#!/bin/sh
# First start: a cluster owned by POSTGRES_USER (password POSTGRES_PASSWORD, scram-sha-256 over
# TCP) with database POSTGRES_DB; later starts use what the volume holds. Then `exec "$@"`.
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "POSTGRES_PASSWORD is required on first start" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    # the database, on a server nobody else can reach yet (no TCP)
    pg_ctl --pgdata="$PGDATA" -w -o "-c listen_addresses='' -k /tmp" start >/dev/null
    if [ "$POSTGRES_DB" != "postgres" ]; then
        psql -h /tmp -U "$POSTGRES_USER" -d postgres -v ON_ERROR_STOP=1 -q \
            -c "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    pg_ctl --pgdata="$PGDATA" -w -m fast stop >/dev/null
    echo "postgres-entrypoint: cluster made for $POSTGRES_USER, database $POSTGRES_DB" >&2
fi
if [ "${1:-}" = "postgres" ]; then
    shift
    exec postgres -D "$PGDATA" -p "${PGPORT:-5432}" -k /tmp "$@"
fi
exec "$@"
