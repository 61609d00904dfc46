#!/usr/bin/env bash
# CI smoke test of the outage drill: run `--quick` in release, then check its JSON
# report's shape and targets with python3's json module.
#
#   bash examples/outage_drill/check_json.sh
#
# Fails (non-zero) when the drill exits non-zero (targets missed), when the JSON lacks
# a field, or when a figure is out of range.
set -euo pipefail
cd "$(dirname "$0")/../.."

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# Built first, with no time limit: a loaded machine may take minutes to compile it,
# and the guard below is for the drill, not the compiler.
cargo build --release --quiet -p tower-failover-examples --example outage_drill

# The drill exits 1 when it misses its targets; keep going to show why.
status=0
timeout 300 cargo run --release --quiet -p tower-failover-examples --example outage_drill -- \
  --quick --plain --json "$out/drill.json" --svg "$out/drill.svg" || status=$?

python3 - "$out/drill.json" "$out/drill.svg" <<'PY'
import json, sys

path, svg = sys.argv[1], sys.argv[2]
with open(path) as f:
    report = json.load(f)

def fail(msg):
    print(f"drill JSON check: {msg}", file=sys.stderr)
    sys.exit(1)

if set(report) != {"phases", "ramp"}:
    fail(f"top-level keys are {sorted(report)}, expected ['phases', 'ramp']")
phases = report["phases"]
if not isinstance(phases, list) or len(phases) < 2:
    fail("`phases` must be a list of at least two phases")
# The report's shape may grow; these fields stay.
want = {"name", "requests", "client_errors", "requests_to_open_providers",
        "streamed", "provider_text_leaks", "p50_ms", "p99_ms", "added_p99_ms", "share"}
for i, p in enumerate(phases):
    if not want <= set(p):
        fail(f"phase {i} lacks keys {sorted(want - set(p))}")
    if not isinstance(p["name"], str) or not p["name"]:
        fail(f"phase {i}: `name` must be a non-empty string")
    for k in ("requests", "client_errors", "requests_to_open_providers",
              "streamed", "provider_text_leaks"):
        if not isinstance(p[k], int) or p[k] < 0:
            fail(f"phase {i} ({p['name']}): `{k}` must be a non-negative integer")
    if p["requests"] == 0:
        fail(f"phase {i} ({p['name']}): no requests were sent")
    if not 0 < p["streamed"] < p["requests"]:
        fail(f"phase {i} ({p['name']}): {p['streamed']} of {p['requests']} requests streamed, "
             "expected some but not all (--stream-share 0.25)")
    for k in ("p50_ms", "p99_ms", "added_p99_ms"):
        if not isinstance(p[k], (int, float)):
            fail(f"phase {i} ({p['name']}): `{k}` must be a number")
    if not 0 <= p["p50_ms"] <= p["p99_ms"]:
        fail(f"phase {i} ({p['name']}): p50 {p['p50_ms']} and p99 {p['p99_ms']} out of order")
    share = p["share"]
    if set(share) != {"primary", "secondary", "tertiary"}:
        fail(f"phase {i} ({p['name']}): `share` keys are {sorted(share)}")
    if any(not 0 <= s <= 1 for s in share.values()) or sum(share.values()) > 1.0001:
        fail(f"phase {i} ({p['name']}): shares {share} are not fractions summing to at most 1")
if phases[0]["added_p99_ms"] != 0:
    fail("the baseline's `added_p99_ms` must be 0")
ramp = report["ramp"]
if set(ramp) != {"steps", "rollbacks"}:
    fail(f"`ramp` has keys {sorted(ramp)}, expected ['rollbacks', 'steps']")
if not isinstance(ramp["rollbacks"], int) or ramp["rollbacks"] < 0:
    fail("`ramp.rollbacks` must be a non-negative integer")
for j, s in enumerate(ramp["steps"]):
    if set(s) != {"target", "admitted"}:
        fail(f"ramp step {j} has keys {sorted(s)}")
    if not 0 < s["target"] <= 1:
        fail(f"ramp step {j}: target {s['target']} not in (0, 1]")
    if s["admitted"] is not None and not 0 <= s["admitted"] <= 1:
        fail(f"ramp step {j}: admitted {s['admitted']} not in [0, 1]")

# The drill's targets, as the JSON states them.
errors = sum(p["client_errors"] for p in phases)
to_open = sum(p["requests_to_open_providers"] for p in phases)
if to_open:
    fail(f"{to_open} requests reached providers whose circuit was open")
leaks = sum(p["provider_text_leaks"] for p in phases)
if leaks:
    fail(f"{leaks} answers showed a caller the provider's rejection text or key material")
if not any(p["name"].startswith("revoked key") for p in phases):
    fail("the revoked-key phase is missing")
if not ramp["steps"]:
    fail("the recovery ramp never ran")
if ramp["rollbacks"] < 1:
    fail("the flapping recovery did not roll the ramp back")
with open(svg) as f:
    if "<svg" not in f.read(512):
        fail("the SVG timeline is not an SVG file")
print(f"drill JSON check: ok ({len(phases)} phases, {sum(p['requests'] for p in phases)} requests "
      f"({sum(p['streamed'] for p in phases)} streamed), {errors} caller errors, {leaks} leaks, {len(ramp['steps'])} ramp steps, {ramp['rollbacks']} rollbacks)")
PY

if [ "$status" -ne 0 ]; then
  echo "outage drill exited with status $status (targets missed)" >&2
  exit "$status"
fi
