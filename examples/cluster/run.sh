#!/usr/bin/env bash
# Three hookhost nodes on one PostgreSQL, all on this machine: a throwaway
# PostgreSQL from the machine's binaries (initdb into a temp folder, a Unix
# socket only), then three `hookhost serve` on ports 8081-8083 sharing its
# schema. Ctrl-C stops everything. Needs the postgresql package (Debian:
# postgresql-15) and a built hookhost (`cargo build --release -p hookhost`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin="$root/target/release/hookhost"
[ -x "$bin" ] || { echo "build hookhost first: cargo build --release -p hookhost" >&2; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$pgbin" ] || { echo "PostgreSQL binaries not found: apt-get install postgresql" >&2; exit 1; }

work=$(mktemp -d)
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); chown postgres "$work"; fi
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -U postgres -A trust >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
  -o "-p 5499 -k $work -c listen_addresses=''" start >/dev/null
pids=()
mkdir -p "$work/plugins"
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for n in 1 2 3; do
  cat >"$work/node$n.toml" <<TOML
[server]
listen = "127.0.0.1:808$n"
data_dir = "$work/node$n"
admin_token = "cluster-demo"

[store]
backend = "postgres"
url = "host=$work port=5499 user=postgres dbname=postgres"
schema = "hookhost"

[cluster]
node_id = "node$n"

[plugins]
dir = "$work/plugins"
TOML
  "$bin" serve --config "$work/node$n.toml" 2>"$work/node$n.log" &
  pids+=($!)
  sleep 1
done
for _ in $(seq 50); do
  curl -sf http://127.0.0.1:8083/readyz >/dev/null && break
  sleep 0.2
done
curl -s -H "Authorization: Bearer cluster-demo" http://127.0.0.1:8083/v1/cluster
echo
echo "three nodes on 127.0.0.1:8081-8083 (logs in $work/node*.log); post events to any:"
echo "  curl -X POST http://127.0.0.1:8082/v1/events -d '{\"type\":\"report\",\"data\":{}}'"
echo "kill the leader (node1) and watch another take over: kill ${pids[0]}"
echo "Ctrl-C stops everything."
wait
