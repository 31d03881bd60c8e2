"""`wattflow restore`: put back the GPU power limits a killed run left behind.

A run saves each GPU's limit to a state file before its first change and restores it
on every exit path it can catch; only SIGKILL (or a power loss) leaves the file. This
reads it, restores through NVML, and deletes it. Exit 0 when there was nothing to do
or everything went back, 1 otherwise; one line per message.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from meters.powercap.guard import (
    StateFileError,
    default_state_path,
    holder_alive,
    read_state,
    restore_file,
)


def run(args: argparse.Namespace) -> int:
    path = Path(getattr(args, "state", None) or default_state_path())
    try:
        state = read_state(path)
    except StateFileError as exc:
        print(f"restore: {exc}")
        return 1
    if state is None or not state["entries"]:
        print(f"restore: nothing to restore (no power-cap state at {path})")
        return 0
    if holder_alive(state):
        print(
            f"restore: wattflow run pid {state.get('pid')} is still running and holds these "
            "caps; it restores them when it ends (stop it first)"
        )
        return 1
    try:
        results = restore_file(path)
    except (StateFileError, OSError) as exc:
        print(f"restore: {exc}")
        return 1
    for r in results:
        print(f"restore: {r.line()}")
    if all(r.ok for r in results):
        return 0
    print(f"restore: kept the failed entries in {path}; fix the cause and run it again")
    return 1
