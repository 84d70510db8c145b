"""Synthetic-scene generator throughput on one core: images per second, PNGs written to disk.

    python benchmarks/bench_synth.py [--size 512x1024] [--n 40] [--seed 0] [--json]

The end-to-end figure is ``generate_dataset`` itself (render + PNG encode + write), with
a render / encode split measured on the same scenes. Goal: >= 20 images/s at 512x1024.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from workers.data.synth import SceneGenerator, encode_png, generate_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="512x1024", help="HxW (default 512x1024)")
    ap.add_argument("--n", type=int, default=40, help="images to generate (default 40)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))

    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):  # one core, as the figure promises
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_dataset(Path(tmp) / "synth", n_train=args.n, n_val=0, size=(h, w), seed=args.seed)

    gen = SceneGenerator((h, w), args.seed)
    render_s = encode_s = 0.0
    for i in range(args.n):
        t0 = time.perf_counter()
        rgb, lab = gen.render("train", i)
        t1 = time.perf_counter()
        encode_png(rgb, 1), encode_png(lab, 6)
        encode_s += time.perf_counter() - t1
        render_s += t1 - t0

    result = {
        "size": f"{h}x{w}", "images": args.n, "images_per_s": round(args.n / summary["seconds"], 1),
        "render_ms": round(1000 * render_s / args.n, 1), "encode_ms": round(1000 * encode_s / args.n, 1),
        "goal_images_per_s": 20,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"synth {result['size']}: {result['images_per_s']} images/s on one core "
              f"(render {result['render_ms']} ms + PNG encode {result['encode_ms']} ms per image; "
              f"goal >= {result['goal_images_per_s']})")
    return result


if __name__ == "__main__":
    main()
