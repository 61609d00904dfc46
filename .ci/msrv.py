"""The declared rust-version holds for what we depend on.

No other toolchain can be downloaded here, so this checks what can be checked on the
one we have: no dependency (normal, build or dev, on any platform) declares a
rust-version newer than the workspace's. Clippy's `incompatible_msrv` lint (on under
`-D warnings` in the clippy step) covers our own use of the standard library.
"""

import json
import subprocess
import sys


def parse(v):
    parts = [int(p) for p in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)
members = set(meta["workspace_members"])
ours = {p["rust_version"] for p in meta["packages"] if p["id"] in members and p.get("rust_version")}
if len(ours) != 1:
    sys.exit(f"the workspace members declare {sorted(ours)} as rust-version: want one")
msrv = ours.pop()
newer = sorted(
    f"{p['name']} {p['version']} needs {p['rust_version']}"
    for p in meta["packages"]
    if p["id"] not in members and p.get("rust_version") and parse(p["rust_version"]) > parse(msrv)
)
if newer:
    sys.exit(f"rust-version {msrv} is not true for these dependencies:\n  " + "\n  ".join(newer))
print(f"rust-version {msrv}: no dependency declares a newer one")
