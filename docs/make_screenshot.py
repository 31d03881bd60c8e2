"""Regenerate docs/report.svg: `wattflow report` of a composite run on the twin with a
power-cap change half-way. Run from the repository root: python docs/make_screenshot.py"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from app.commands.report import analyse, print_reports


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        session = Path(tmp) / "composite-sim.jsonl"
        subprocess.run(
            [sys.executable, "-m", "app", "run", "--headless", "--fast", "--duration", "600",
             "--batch-limit", "64", "--at", "300:power_cap=450", "--session", str(session)],
            check=True, stdout=subprocess.DEVNULL,
        )
        console = Console(record=True, width=140, highlight=False, file=open("/dev/null", "w"))  # noqa: SIM115
        console.print("$ wattflow report sessions/composite-sim.jsonl")
        print_reports([analyse(session)], console)
        console.save_svg("docs/report.svg", title="wattflow report")


if __name__ == "__main__":
    main()
