#!/bin/sh
# bench/with_pg.sh COMMAND...: runs COMMAND with CANCEL_BENCH_PG naming a
# private PostgreSQL cluster on a unix socket in a temp dir (initdb refuses
# root: the cluster belongs to the postgres user), stopped afterwards.
#   bench/with_pg.sh ./bench/bench_io_interposed
set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
dir=$(mktemp -d /tmp/bench_pg.XXXXXX)
chown postgres "$dir"
trap 'runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1; rm -rf "$dir"' EXIT
runuser -u postgres -- "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null 2>&1
runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/data/log" -w \
    -o "-k $dir -c listen_addresses='' -c fsync=off" start >/dev/null
CANCEL_BENCH_PG="host=$dir dbname=postgres user=postgres" "$@"
