"""A fake /sys/class/powercap tree in a temp folder, with counters tests can move
(and wrap) by hand."""

from __future__ import annotations

import os
from pathlib import Path

# The kernel's typical range: 2^32 * 61 uJ, about 262 kJ.
MAX_RANGE_UJ = 262_143_328_850


class FakePowercap:
    """`FakePowercap(tmp_path)` builds package-0 with a dram subzone and a core subzone
    (which meters must skip), plus an intel-rapl-mmio duplicate of the package (also
    skipped). `sockets=2` adds package-1 and its dram."""

    def __init__(
        self,
        base: Path,
        *,
        sockets: int = 1,
        max_range_uj: int = MAX_RANGE_UJ,
        dram: bool = True,
    ) -> None:
        self.root = base / "powercap"
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_range_uj = max_range_uj
        self.zones: dict[str, Path] = {}  # our device name -> zone folder
        for s in range(sockets):
            self._zone(f"intel-rapl:{s}", f"package-{s}", 1_000_000 * (s + 1), f"cpu{s}")
            self._zone(f"intel-rapl:{s}:0", "core", 500_000, None)
            if dram:
                self._zone(f"intel-rapl:{s}:1", "dram", 200_000, f"dram{s}")
        self._zone("intel-rapl-mmio:0", "package-0", 999, None)
        (self.root / "intel-rapl").mkdir(exist_ok=True)  # the control-type folder

    def _zone(self, folder: str, name: str, energy_uj: int, device: str | None) -> None:
        p = self.root / folder
        p.mkdir(exist_ok=True)
        (p / "name").write_text(name + "\n")
        (p / "max_energy_range_uj").write_text(f"{self.max_range_uj}\n")
        (p / "energy_uj").write_text(f"{energy_uj}\n")
        if device:
            self.zones[device] = p

    def energy_uj(self, device: str) -> int:
        return int((self.zones[device] / "energy_uj").read_text())

    def add(self, device: str, joules: float) -> None:
        """Consume `joules` on `device`; the counter wraps at max_energy_range_uj as the
        kernel's does."""
        now = self.energy_uj(device) + round(joules * 1e6)
        (self.zones[device] / "energy_uj").write_text(f"{now % self.max_range_uj}\n")

    def set_uj(self, device: str, value: int) -> None:
        (self.zones[device] / "energy_uj").write_text(f"{value}\n")

    def make_root_only(self) -> None:
        """What Linux >= 5.10 does: energy_uj readable by root only."""
        for p in self.zones.values():
            os.chmod(p / "energy_uj", 0o400)
