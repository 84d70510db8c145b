"""`dance` — the command line of the DANCE platform (DESIGN §7).

Each sub-command lives in ``orchestrator/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
Any :class:`UserError` (or a dataset/config error) becomes one line on stderr and a
non-zero exit status instead of a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from orchestrator.errors import UserError

COMMAND_MODULES = ["quickstart", "data", "train", "evaluate", "predict", "export", "sweep", "runs", "boards", "bench",
                   "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dance",
        description="DANCE: data-network co-optimization for efficient segmentation training and inference.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"orchestrator.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from workers.checkpoint import CheckpointError
    from workers.data.datasets.base import DatasetError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, DatasetError, CheckpointError) as exc:
        print(f"dance: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # full disk, read-only folder, a folder where a file was expected, ...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"dance: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dance: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
