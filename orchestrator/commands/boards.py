"""`dance boards check [NAME]` and `dance boards enroll NAME [--yes] [--replace]` (DESIGN §6)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from orchestrator.boards import hostkeys
from orchestrator.boards.errors import BoardError

DESCRIPTION = """\
The board inventory (configs/boards.yaml, or --boards FILE; without one, the embedded
`local` board) and its host keys, kept in the platform's own known_hosts file
(`known_hosts:` in the inventory, default .dance/known_hosts; never ~/.ssh/known_hosts).

  check [NAME]     per board: reachable, auth, host key, Python version and the agent's probe
                   (power sources and rails, runtimes, L4T/JetPack, nvpmodel mode); exit 1 if
                   any board fails
  enroll NAME      fetch the board's host key, print its SHA256 fingerprint and store it after
                   you confirm (--yes: without asking); a different key already on file is
                   refused unless --replace
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("boards", help="board inventory: check boards, enrol host keys",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = p.add_subparsers(dest="boards_command", metavar="ACTION")
    bsub.required = True
    c = bsub.add_parser("check", help="reachability, auth, host key, Python and the agent probe per board")
    c.add_argument("name", nargs="?", help="only this board")
    c.add_argument("--boards", type=Path, help="inventory file (default configs/boards.yaml, else the local board)")
    c.set_defaults(func=cmd_check)
    e = bsub.add_parser("enroll", help="store a board's host key after showing its fingerprint")
    e.add_argument("name", help="board name from the inventory")
    e.add_argument("--boards", type=Path, help="inventory file (default configs/boards.yaml)")
    e.add_argument("--yes", action="store_true", help="store without asking")
    e.add_argument("--replace", action="store_true",
                   help="replace a different key already on file (after checking why it changed)")
    e.set_defaults(func=cmd_enroll)


def cmd_enroll(args: argparse.Namespace) -> int:
    from orchestrator.boards.inventory import load_inventory

    inv = load_inventory(args.boards)
    board = inv.board(args.name)
    result = hostkeys.enroll(board, inv.known_hosts_path(), yes=args.yes, replace=args.replace)
    return 0 if result in ("stored", "replaced", "unchanged") else 1


def check_board(board, inv) -> dict:
    """One board's checks, each a (ok, detail) pair, in order; stops at the first that fails."""
    from orchestrator.boards.agentjob import Job, run_job
    from orchestrator.boards.transport import make_transport

    out: dict = {"board": board.name, "checks": []}
    t = make_transport(board, inv.known_hosts_path())
    steps = ["reachable", "host key", "auth"] if board.transport == "ssh" else ["local"]
    try:
        try:
            t.connect()
            for s in steps:
                out["checks"].append((s, True, f"{board.user}@{board.host}:{board.port}" if s == "reachable" else "ok"))
        except BoardError as exc:
            failed = {"unreachable": "reachable", "host_key": "host key", "auth": "auth"}.get(exc.kind, "reachable")
            for s in steps[:steps.index(failed)]:
                out["checks"].append((s, True, "ok"))
            out["checks"].append((failed, False, exc.message))
            return out
        res = t.shell(f"{shlex.quote(board.python)} -c 'import sys; print(sys.version.split()[0])'", 30)
        if res.rc != 0:
            out["checks"].append(("python", False, f"{board.python}: exit {res.rc}: {res.stderr.strip()[-200:]}"))
            return out
        version = res.stdout.strip()
        ok = tuple(int(x) for x in version.split(".")[:2]) >= (3, 6)
        out["checks"].append(("python", ok, f"{board.python} {version}" + ("" if ok else " (the agent needs >= 3.6)")))
        if not ok:
            return out
        try:
            probe = run_job(t, Job(kind="probe"), "check-probe", inv.measure,
                            inv.known_hosts_path().parent / "agent-cache")
        except BoardError as exc:
            out["checks"].append(("agent probe", False, f"{exc.kind}: {exc.message}"))
            return out
        out["probe"] = probe
        b = probe.get("board") or {}
        rts = probe.get("runtimes") or {}
        srcs = [s for s in probe.get("power_sources") or [] if s.get("available")]
        runtime = {"onnxruntime": "onnxruntime", "torchscript": "torch", "trtexec": "trtexec"}[board.runtime]
        rt_ok = bool((rts.get(runtime) or {}).get("available"))
        out["checks"].append(("agent probe", rt_ok, "; ".join([
            f"model {b.get('model')}", f"L4T {(b.get('l4t') or {}).get('version')}",
            f"nvpmodel {(b.get('nvpmodel') or {}).get('name') or (b.get('nvpmodel') or {}).get('id')}",
            f"power auto={probe.get('power_auto')} "
            + (f"({', '.join(s.get('name', '?') + ':' + ','.join(s.get('rails') or []) for s in srcs)})"
               if srcs else "(none)"),
            "runtimes " + ", ".join(f"{k} {v.get('version') or ''}".strip() for k, v in rts.items()
                                    if v.get("available")),
        ]) + ("" if rt_ok else f"; MISSING its runtime {board.runtime}")))
        return out
    finally:
        t.close()


def cmd_check(args: argparse.Namespace) -> int:
    from orchestrator.boards.inventory import load_inventory

    inv = load_inventory(args.boards)
    boards = [inv.board(args.name)] if args.name else inv.boards
    print(f"inventory: {inv.source}; known_hosts: {inv.known_hosts_path()}")
    bad = 0
    for board in boards:
        res = check_board(board, inv)
        ok = all(c[1] for c in res["checks"])
        bad += not ok
        print(f"{board.name} ({board.transport}, labels {', '.join(board.labels) or '-'}): {'OK' if ok else 'FAILED'}")
        for name, good, detail in res["checks"]:
            print(f"  {'ok  ' if good else 'FAIL'} {name:<12} {detail}")
    if bad:
        print(f"{bad} of {len(boards)} board(s) failed", file=sys.stderr)
    return 1 if bad else 0
