"""The layering (docs/architecture.md) is enforced by import-linter's contracts in
pyproject.toml, which CI runs as `lint-imports`. These tests prove the contracts bite:
a copy of the four packages passes as it is, and fails, naming the contract, once a
module that breaks it is added. They also check that the plugins' contract lists every
module of app that plugins may not import, so a new module cannot slip past it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "engines", "workloads", "meters")
# What plugins may import from app (the contract forbids everything else of app).
PLUGIN_API = {"app", "app.core", "app.core.events", "app.core.clock", "app.core.options",
              "app.core.registry"}


def _config() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]


def _contract_name(contract_id: str) -> str:
    return next(c["name"] for c in _config()["contracts"] if c["id"] == contract_id)


def _lint_imports() -> str:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        found = shutil.which("lint-imports")
        if found is None:
            pytest.skip("import-linter is not installed (pip install -e '.[test]')")
        exe = Path(found)
    return str(exe)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four packages and the import-linter configuration, copied once."""
    root = tmp_path_factory.mktemp("layering")
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, root / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.fixture
def tree(pristine: Path, tmp_path: Path) -> Path:
    """A fresh copy per test, so each violation is checked alone."""
    root = tmp_path / "tree"
    shutil.copytree(pristine, root)
    return root


def _run(root: Path) -> subprocess.CompletedProcess[str]:
    # cwd and PYTHONPATH at the copy: grimp must build the graph from the copy, not from
    # the editable install of the checkout.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([_lint_imports(), "--no-cache", "--no-logo"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def _broken(output: str) -> set[str]:
    """The names of the contracts the run reports BROKEN."""
    return {line.removesuffix(" BROKEN") for line in output.splitlines()
            if line.endswith(" BROKEN")}


def test_the_unmodified_packages_keep_every_contract(tree: Path) -> None:
    res = _run(tree)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert f"Contracts: {len(_config()['contracts'])} kept, 0 broken." in out


@pytest.mark.parametrize(("path", "source", "contract_ids"), [
    # Engines know nothing of the workflows that drive them.
    ("engines/_violation.py", "import workloads.text\n", {"engines-not-workloads"}),
    # The core runs without the UI: no UI library in it, even for a colour.
    ("app/core/_violation.py", "import textual\n", {"no-ui-libraries"}),
    ("meters/_violation.py", "from rich.console import Console\n", {"no-ui-libraries"}),
    # Plugins see the core's events, clock and protocols, not its machinery or front ends
    # (the commands reach rich too: indirect imports count).
    ("meters/_violation.py", "from app.core.runner import Runner\n", {"plugins-core-api"}),
    ("workloads/_violation.py", "from app.core import knobs\n", {"plugins-core-api"}),
    ("engines/_violation.py", "import app.commands.report\n",
     {"plugins-core-api", "no-ui-libraries"}),
    # The core never reaches up to the front ends (which import it: a cycle as well).
    ("app/core/_violation.py", "import app.cli\n",
     {"app-layers", "acyclic-siblings", "no-ui-libraries"}),
], ids=lambda v: v.strip() if isinstance(v, str) and not v.endswith(".py") else None)
def test_a_violation_breaks_its_contract(tree: Path, path: str, source: str,
                                         contract_ids: set[str]) -> None:
    (tree / path).write_text(source)
    res = _run(tree)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert _broken(out) == {_contract_name(c) for c in contract_ids}, out


def test_an_import_cycle_between_siblings_breaks_the_acyclic_contract(tree: Path) -> None:
    # Two sibling modules of meters importing each other (the cycle issue 9 removed
    # between the power-cap guard and the NVML restore, in miniature).
    (tree / "meters" / "_cycle_a.py").write_text("import meters._cycle_b\n")
    (tree / "meters" / "_cycle_b.py").write_text("import meters._cycle_a\n")
    res = _run(tree)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert _broken(out) == {_contract_name("acyclic-siblings")}, out
    assert "._cycle_b -> ._cycle_a" in out or "._cycle_a -> ._cycle_b" in out


def _modules(package: str) -> set[str]:
    out = set()
    for path in (ROOT / package).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.add(".".join(parts))
    return out


def test_the_plugins_contract_forbids_every_module_of_app_but_the_core_api() -> None:
    contract = next(c for c in _config()["contracts"] if c["id"] == "plugins-core-api")
    forbidden = set(contract["forbidden_modules"])

    def covered(module: str) -> bool:
        parts = module.split(".")
        return any(".".join(parts[:i]) in forbidden for i in range(1, len(parts) + 1))

    missing = sorted(m for m in _modules("app") - PLUGIN_API if not covered(m))
    assert not missing, f"add to plugins-core-api's forbidden_modules: {missing}"
    allowed_but_listed = sorted(forbidden & PLUGIN_API)
    assert not allowed_but_listed
