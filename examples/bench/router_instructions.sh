#!/usr/bin/env bash
# Instructions per request spent inside the gateway's router (issue 19), counted by
# callgrind: deterministic, so the figure does not move with the machine's load.
#
#   examples/bench/router_instructions.sh [BINARY] [TARGET] [ANSWER]
#
# BINARY defaults to target/release/examples/gateway_allocs (build it first with
# `cargo build --release --example gateway_allocs`); TARGET is `gateway` (the default)
# or `passthrough` (a bare axum proxy); ANSWER is `json` (the default) or `streamed`.
# Only what runs inside `gateway_allocs::through` (the router's call and the reading
# of its answer) is counted, not the simulated provider's side nor the client
# connection's task. Two runs, of 200 and 2,200 requests: their difference over
# 2,000 leaves out start-up and warm-up.
set -euo pipefail
bin=${1:-target/release/examples/gateway_allocs}
target=${2:-gateway}
answer=${3:-json}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() {
    valgrind --tool=callgrind --toggle-collect='gateway_allocs::through*' \
        --callgrind-out-file="$out/cg.$1" "$bin" --only "$target" --answer "$answer" \
        --count "$1" --soak 0 2>&1 | awk '/Collected/ { gsub(",", "", $NF); print $NF }'
}
a=$(count 200)
b=$(count 2200)
echo "$target $answer: $(( (b - a) / 2000 )) instructions a request inside the router"
