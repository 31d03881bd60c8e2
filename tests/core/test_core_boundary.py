"""The core runs without the UI: importing it must not import textual or rich."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CORE_MODULES = [
    "app.core.runner", "app.core.stats", "app.core.bus", "app.core.session_writer",
    "app.core.session_reader", "engines", "engines.sim.engine", "meters", "meters.sim.meter",
    "workloads", "workloads.sequential",
]


def test_core_imports_neither_textual_nor_rich() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {CORE_MODULES!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


def test_core_sources_never_import_the_ui() -> None:
    offenders = []
    for folder in ("app/core", "engines", "workloads", "meters"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for line in text.splitlines():
                s = line.strip()
                if s.startswith(("import ", "from ")) and any(
                    f" {lib}" in s.split(" import")[0] + " " for lib in ("textual", "rich")
                ):
                    offenders.append(f"{path.relative_to(ROOT)}: {s}")
    assert offenders == []
