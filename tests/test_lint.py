"""The lint configuration the project keeps (pyproject.toml [tool.ruff]) passes on the whole tree."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("ruff")
    if found is None:  # `make test` installs it with the project's [test] extra
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    return [found]


def test_ruff_passes():
    res = subprocess.run([*_ruff(), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, ("ruff check found problems (fix them, or `ruff check --fix .`):\n"
                                 f"{res.stdout}{res.stderr}")
