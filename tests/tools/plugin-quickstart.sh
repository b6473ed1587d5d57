#!/usr/bin/env bash
# Times what a new plugin author does, per language: `plugin new` → `plugin
# build --install` into a running server's plugins folder → the server
# serves it (GET /v1/plugins). Package caches start empty (cargo registry
# and target, npm, pip), so downloads and first compiles count.
#
#   tests/tools/plugin-quickstart.sh [rust] [js] [python]
#
# Needs a built binary (HOOKHOST, default target/release/hookhost), rustup
# with wasm32-wasip2, npm and python3 with venv.
set -euo pipefail
bin=$(realpath "${HOOKHOST:-target/release/hookhost}")
work=$(mktemp -d)
port=${PORT:-18090}
token=quickstart-admin-token
mkdir "$work/plugins"
cat >"$work/hookhost.toml" <<TOML
[plugins]
dir = "plugins"
[server]
listen = "127.0.0.1:$port"
data_dir = "db"
admin_token = "$token"
TOML
"$bin" serve --config "$work/hookhost.toml" 2>"$work/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
until curl -sf "127.0.0.1:$port/healthz" >/dev/null; do sleep 0.1; done

serving() {
    curl -sf -H "Authorization: Bearer $token" "127.0.0.1:$port/v1/plugins" |
        grep -q "\"name\": *\"$1\""
}

langs=("$@")
[ ${#langs[@]} -gt 0 ] || langs=(rust js python)
for lang in "${langs[@]}"; do
    name=quick-$lang
    start=$(date +%s.%N)
    (
        cd "$work"
        export CARGO_HOME=$work/cargo-home npm_config_cache=$work/npm-cache PIP_NO_CACHE_DIR=1
        "$bin" plugin new "$name" --role filter --lang "$lang" >/dev/null 2>&1
        "$bin" plugin build "$name" --install plugins >"$work/$name.log" 2>&1
    ) || { echo "$lang: build failed"; cat "$work/$name.log"; exit 1; }
    until serving "$name"; do sleep 0.1; done
    printf '%s: %.1f s from plugin new to serving\n' "$lang" "$(echo "$(date +%s.%N) - $start" | bc)"
done
