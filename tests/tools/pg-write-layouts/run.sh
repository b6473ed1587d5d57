#!/usr/bin/env bash
# PostgreSQL alone, under pgbench: the row writes of one event's life in
# hookhost's schema today, against layouts that write less (BENCHMARKS.md,
# "How much one fewer row write would buy on PostgreSQL"). Each script is
# one batch of 16 events: admission, the pipeline's transaction, and (where
# the layout has it) the delivered-state update, each its own commit.
#
#   tests/tools/pg-write-layouts/run.sh 'host=/tmp/pgb port=5499 user=postgres dbname=postgres' [clients] [seconds]
#
# It creates (and drops) the schemas `a` and `b` and the sequence
# `public.pg_write_layouts` in that database.
set -euo pipefail
conn=${1:?a libpq connection string}
clients=${2:-16}
secs=${3:-20}
export PGOPTIONS="-c client_min_messages=warning"
here=$(cd "$(dirname "$0")" && pwd)
psql "$conn" -q -v ON_ERROR_STOP=1 -f "$here/schema.sql"
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
for layout in today jobs-once inbox inbox-jobs-once; do
  psql "$conn" -q -c "TRUNCATE a.events, a.jobs, b.events, b.inbox, b.jobs" -c CHECKPOINT
  before=$(busy)
  tps=$(pgbench "$conn" -n -c "$clients" -j 2 -T "$secs" -f "$here/$layout.sql" | awk '/^tps/{print $3}')
  after=$(busy)
  python3 -c "
tps, busy, secs = float('$tps'), ($after - $before) / 100, $secs
print(f'$layout: {tps * 16:,.0f} events/s, machine CPU {busy * 1e6 / (tps * 16 * secs):.0f} µs per event')"
done
psql "$conn" -q -c "DROP SCHEMA a CASCADE" -c "DROP SCHEMA b CASCADE" -c "DROP SEQUENCE public.pg_write_layouts"
