"""`--meter auto`: the real meters this machine can read.

Tries NVML (GPUs) then RAPL (CPU package, DRAM). A meter that cannot read here is not
an error: its one-line reason is returned for the session's notes and for `doctor`.
The simulated meter is not chosen here: it comes with the simulated engine.
"""

from __future__ import annotations

from typing import Any

import meters
from meters.base import Meter, MeterUnavailable

REAL_METERS = ("nvml", "rapl")


def available_meters(options: dict[str, Any]) -> tuple[list[Meter], list[str]]:
    """(meters, reasons). The meters returned are already open (opening is how we
    know they work; `open()` again is a no-op); close them when done. `reasons` has
    one line per meter left out."""
    found: list[Meter] = []
    reasons: list[str] = []
    for name in REAL_METERS:
        try:
            meter = meters.create(name, options)
            meter.open()
        except MeterUnavailable as exc:
            reasons.append(str(exc) if str(exc).startswith(name) else f"{name}: {exc}")
            continue
        except (ValueError, OSError) as exc:
            reasons.append(f"{name}: {exc}")
            continue
        found.append(meter)
    return found, reasons
