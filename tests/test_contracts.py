"""The nevers (ARCHITECTURE.md) hold: `lint-imports` checks the contracts in pyproject.toml, so CI,
which runs only pytest, checks them too."""

import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_the_import_contracts_hold():
    # --no-cache: no cache folder left in the checkout.
    out = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in out.stdout


def test_no_contract_has_exceptions():
    weakened = [c["name"] for c in CONTRACTS
                if c.get("ignore_imports") or c.get("allow_indirect_imports") or c.get("as_packages") is False]
    assert weakened == []


def test_nothing_below_the_cli_covers_every_module():
    (contract,) = [c for c in CONTRACTS if c["name"] == "nothing below the CLI imports it"]
    modules = {p.stem if p.is_file() else p.name for p in (ROOT / "harness").iterdir()
               if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    unlisted = {f"harness.{m}" for m in modules} - set(contract["source_modules"]) - set(contract["forbidden_modules"])
    assert not unlisted, f"add {sorted(unlisted)} to the source_modules of {contract['name']!r} in pyproject.toml"
    assert set(contract["forbidden_modules"]) == {"harness.cli", "harness.__main__"}
