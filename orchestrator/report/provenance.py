"""Where the compared models started from: the pretrained backbone file, its digest and its source.

The digest and the source note are the ones recorded on the trials' runs when they were created
(``orchestrator.runs.provenance``); the file found here at report time is checked against them.
Runs from before those tags existed fall back to the file as it is now, and say so. Nothing is
guessed: a file that is in neither is said to be unknown.
"""
from __future__ import annotations

from pathlib import Path

from orchestrator.report.collect import Trial
from orchestrator.runs.provenance import SOURCE_SUFFIX, source_note
from orchestrator.runs.schema import PRETRAINED_SHA256_TAG, PRETRAINED_SOURCE_TAG
from workers.digest import file_sha256

__all__ = ["SOURCE_SUFFIX", "start_line"]


def _weights_part(path: str, trials: list[Trial]) -> str:
    """What the trials that loaded ``path`` record about it, checked against the file here."""
    p = Path(path)
    recorded = sorted({t.tags.get(PRETRAINED_SHA256_TAG, "") for t in trials} - {""})
    here = file_sha256(p) if p.is_file() else None
    if not recorded:  # runs from before the tags: only the file as it is now can be described
        if here is None:
            return f"backbone weights `{path}` (not on this machine and not recorded: digest and source unknown)"
        origin = source_note(p) or f"source not recorded (no {p.name}{SOURCE_SUFFIX}, or it is empty)"
        return f"backbone weights `{path}`, sha256 `{here[:16]}…` (of the file now; not recorded at training): {origin}"
    digests = ", ".join(f"`{d[:16]}…`" for d in recorded)
    notes = sorted({t.tags.get(PRETRAINED_SOURCE_TAG, "") for t in trials} - {""})
    origin = "; ".join(notes) or f"source not recorded (no {p.name}{SOURCE_SUFFIX} when they trained)"
    text = f"backbone weights `{path}`, sha256 {digests} (recorded at training): {origin}"
    if len(recorded) > 1:
        text += " — the trials recorded different files under this path"
    if here is None:
        text += " (the file is not on this machine now)"
    elif here not in recorded:
        text += f" — the file here now hashes to `{here[:16]}…`: it was replaced after training"
    return text


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
        parts.append(_weights_part(b, [t for t in trials if t.param("model.pretrained_backbone") == b]))
    parts += [f"whole model from `{i}` (train.init_checkpoint)" for i in inits]
    return "; ".join(parts)
