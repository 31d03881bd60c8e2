"""Find the RAPL package and DRAM domains under Linux powercap.

Layout (Intel, and AMD Zen through the same intel_rapl driver):

    /sys/class/powercap/intel-rapl:0/        name=package-0, energy_uj, max_energy_range_uj
    /sys/class/powercap/intel-rapl:0:0/      name=core     (inside the package: skipped)
    /sys/class/powercap/intel-rapl:0:2/      name=dram
    /sys/class/powercap/intel-rapl:1/        name=psys     (platform: skipped)

`intel-rapl-mmio:*` repeats the package domain through another interface; reading
both would count the package twice, so it is skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from meters.base import MeterUnavailable

DEFAULT_ROOT = Path("/sys/class/powercap")
_ZONE = re.compile(r"^(?:intel|amd)-rapl:(\d+)(?::(\d+))?$")
_PACKAGE = re.compile(r"^package-(\d+)$")


@dataclass(slots=True)
class Zone:
    path: Path
    name: str  # the kernel's: package-0, dram
    device: str  # ours: cpu0, dram0
    component: str  # cpu, dram
    max_range_uj: int

    @property
    def energy_file(self) -> Path:
        return self.path / "energy_uj"

    def read_uj(self) -> int:
        return int(self.energy_file.read_text())


def discover(root: Path = DEFAULT_ROOT) -> list[Zone]:
    """Readable package and DRAM zones; MeterUnavailable (one line) if there are none."""
    if not root.is_dir():
        raise MeterUnavailable(
            f"rapl: no powercap interface at {root} (not Intel/AMD, a VM, or the "
            "intel_rapl driver is not loaded)"
        )
    dirs = sorted(
        (p for p in root.iterdir() if _ZONE.match(p.name)),
        key=lambda p: tuple(int(x) for x in re.findall(r"\d+", p.name)),
    )
    zones: list[Zone] = []
    package_of: dict[str, int] = {}  # top-level zone number -> package index
    drams = 0
    for p in dirs:
        m = _ZONE.match(p.name)
        assert m is not None
        try:
            name = (p / "name").read_text().strip()
            max_range = int((p / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            continue  # a half-present zone: not one we can use
        if pkg := _PACKAGE.match(name):
            package_of[m.group(1)] = int(pkg.group(1))
            zones.append(Zone(p, name, f"cpu{pkg.group(1)}", "cpu", max_range))
        elif name == "dram":
            # DRAM is a subzone of its package on most servers, a top-level zone on some.
            index = package_of.get(m.group(1), drams) if m.group(2) is not None else drams
            drams += 1
            zones.append(Zone(p, name, f"dram{index}", "dram", max_range))
    if not zones:
        raise MeterUnavailable(f"rapl: no package or dram domain under {root}")
    for z in zones:
        try:
            z.read_uj()
        except PermissionError:
            raise MeterUnavailable(
                f"rapl: {z.energy_file} is readable only by root (Linux >= 5.10); "
                "run as root or `sudo chmod o+r` the energy_uj files"
            ) from None
        except (OSError, ValueError) as exc:
            raise MeterUnavailable(f"rapl: cannot read {z.energy_file} ({exc})") from None
    return zones
