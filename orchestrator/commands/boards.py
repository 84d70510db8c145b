"""`dance boards check [NAME]`, `dance boards enroll NAME [--yes] [--replace]` (DESIGN §6) and
`dance boards emulate NAME [--stop] | --list` (a board on this machine, without hardware)."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from orchestrator.boards import emulated, hostkeys
from orchestrator.boards.errors import BoardError
from orchestrator.errors import UserError

DESCRIPTION = """\
The board inventory (configs/boards.yaml, or --boards FILE; without one, the embedded
`local` board) and its host keys, kept in the platform's own known_hosts file
(`known_hosts:` in the inventory, default .dance/known_hosts; never ~/.ssh/known_hosts).

  check [NAME]     per board: reachable, auth, host key, Python version, onnxruntime (where it is
                   the board's runtime) and the agent's probe (power sources and rails, runtimes,
                   L4T/JetPack, nvpmodel mode); exit 1 if any board fails
  enroll NAME      fetch the board's host key, print its SHA256 fingerprint and store it after
                   you confirm (--yes: without asking); a different key already on file is
                   refused unless --replace
  emulate NAME     try the fleet without hardware: a board on this machine (sshd on 127.0.0.1 and
                   an emulated Jetson rail tree), added to the inventory; --stop, --list
"""

EMULATE = f"""\
Start an emulated board: Debian's /usr/sbin/sshd on 127.0.0.1 (keys made in DIR, default
.dance/emulated/NAME/) and an emulated Jetson sysfs tree whose power rails follow a slowly varying
waveform at the layout's sensor rate; both run detached, in their own process groups, until --stop.
The board is written into the boards file (created if missing; other boards, settings and comments
are kept) with labels [emulated, LAYOUT], and its host key is stored in the inventory's known_hosts.
Its `python` is this interpreter ({sys.executable}), so onnxruntime is importable by the agent.
Needs openssh-server (apt-get install openssh-server).

  dance boards emulate tx2-emu                       start (layout tx2)
  dance boards check tx2-emu                         reachable, auth, Python, onnxruntime, the probe
  dance bench CKPT --labels tx2-emu                  measure on it
  dance boards emulate tx2-emu --stop [--remove]     stop both processes (--remove: drop its entry)
  dance boards emulate --list                        emulated boards under .dance/emulated, alive or dead

Layouts: {", ".join(emulated.LAYOUTS)}.
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
    m = bsub.add_parser("emulate", help="a board on this machine without hardware (sshd + emulated rails)",
                        description=EMULATE, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("name", nargs="?", help="the board's name in the inventory")
    m.add_argument("--layout", default="tx2", metavar="LAYOUT",
                   help=f"the Jetson to emulate: {', '.join(emulated.LAYOUTS)} (default tx2)")
    m.add_argument("--boards", type=Path, metavar="FILE",
                   help="inventory file to add the board to (default configs/boards.yaml)")
    m.add_argument("--dir", type=Path, help="the board's folder (default .dance/emulated/NAME); "
                                            "with --list, the folder holding them (default .dance/emulated)")
    m.add_argument("--port", type=int, metavar="P", help="sshd's port on 127.0.0.1 (default: a free one)")
    what = m.add_mutually_exclusive_group()
    what.add_argument("--stop", action="store_true", help="stop the board's sshd and writer (by their recorded PIDs)")
    what.add_argument("--list", action="store_true", help="the emulated boards and whether they run")
    m.add_argument("--remove", action="store_true", help="with --stop: also remove its entry from the boards file")
    m.set_defaults(func=cmd_emulate)


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
        if board.runtime == "onnxruntime" and not _onnxruntime_check(t, board, out):
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


def _onnxruntime_check(t, board, out: dict) -> bool:
    """The board's Python imports onnxruntime (its runtime); a failure says what to install."""
    res = t.shell(f"{shlex.quote(board.python)} -c 'import onnxruntime; print(onnxruntime.__version__)'", 120)
    if res.rc == 0:
        out["checks"].append(("onnxruntime", True, f"onnxruntime {res.stdout.strip()}"))
        return True
    why = "timed out" if res.timed_out else ((res.stderr.strip().splitlines() or [f"exit {res.rc}"])[-1])[-200:]
    out["checks"].append(("onnxruntime", False,
                          f"{board.python} cannot import onnxruntime ({why}): install it for that Python on the "
                          f"board, `{board.python} -m pip install onnxruntime` (on a Jetson, NVIDIA's "
                          f"onnxruntime-gpu wheel for its JetPack), or set the board's runtime to trtexec"))
    return False


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


def cmd_emulate(args: argparse.Namespace) -> int:
    if args.list:
        rows = emulated.list_emulated(args.dir)
        where = (args.dir or emulated.DEFAULT_PARENT).absolute()
        if not rows:
            print(f"no emulated boards under {where}")
        for r in rows:
            procs = ", ".join(f"{k} {r[f'{k}_pid']} {'alive' if up else 'dead'}" for k, up in r["processes"].items())
            print(f"{r['name']:<16} {r['state']:<12} {r['layout'] or '?':<10} 127.0.0.1:{r['port']:<6} "
                  f"({procs}) {r['folder']}")
        return 0
    if not args.name:
        raise UserError("boards emulate: give the board's NAME (or --list)")
    if args.remove and not args.stop:
        raise UserError("boards emulate: --remove goes with --stop")
    if args.stop:
        for line in emulated.stop(args.name, args.boards, args.dir, remove=args.remove):
            print(line)
        return 0
    s = emulated.start(args.name, args.layout, args.boards, args.dir, args.port)
    boards = f" --boards {shlex.quote(str(args.boards))}" if args.boards else ""
    folder = f" --dir {shlex.quote(str(args.dir))}" if args.dir else ""
    refresh = f"every {s.refresh_s:g} s" if s.refresh_s else f"{emulated.WRITER_RATE_HZ:g} times a second"
    print(f"emulated board {s.name} ({s.layout}) is running:\n"
          f"  sshd    pid {s.sshd_pid} on 127.0.0.1:{s.board.port}, "
          f"host key {s.fingerprint} stored in {s.known_hosts}\n"
          f"  rails   pid {s.writer_pid}: about {s.power_w:g} W, refreshed {refresh}, tree {s.board.fs_root}\n"
          f"  board   {s.name} in {s.boards_file} (labels {', '.join(s.board.labels)}; user {s.board.user}; "
          f"python {s.board.python})\n"
          f"  folder  {s.folder} (keys, sshd.log, pids.json)")
    for note in s.notes:
        print(f"  note    {note}")
    print(f"use it:\n"
          f"  dance boards check {s.name}{boards}\n"
          f"  dance bench CHECKPOINT{boards} --labels {s.name}\n"
          f"stop it (both processes, by PID; --remove also drops its entry):\n"
          f"  dance boards emulate {s.name} --stop{boards}{folder}")
    return 0
