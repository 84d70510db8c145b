"""The paper's own numbers (configs/reproduce/paper_numbers.yaml), read once per report."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.errors import UserError

DEFAULT_FILE = Path(__file__).resolve().parents[2] / "configs" / "reproduce" / "paper_numbers.yaml"
REQUIRED = ("table8", "table4", "table6", "table9", "table7", "fig4", "table12")


def load_paper_numbers(path: str | Path | None = None) -> dict[str, Any]:
    """The YAML as a dict; a missing file or section is one clear error."""
    from orchestrator.config import read_yaml

    path = Path(path) if path is not None else DEFAULT_FILE
    if not path.is_file():
        raise UserError(f"{path}: the paper's numbers file is missing")
    data = read_yaml(path)
    missing = [k for k in REQUIRED if k not in (data or {})]
    if missing:
        raise UserError(f"{path}: missing section(s) {', '.join(missing)}")
    return data
