"""Figures for the complexity scorer (issue: foundation).

* scoring throughput on 1024×2048 images, CPU: from decoded tensors, and end to end from PNGs;
* the cost of scoring relative to decoding the same PNGs (single thread, and pipelined as
  `score_paths` runs it: decoding in a thread pool, Eq. 1 on the main thread);
* a cached re-run over 3,000 images;
* peak memory (RSS) of scoring N vs 4N images, in fresh processes.

Run: .venv/bin/python benchmarks/bench_complexity.py [--images 16]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from workers.dance.complexity import sc_mean
from workers.data.imageio import read_rgb
from workers.data.scoring import score_paths


def make_pngs(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    """Urban-like test images from the project's synthetic generator, saved as real PNGs."""
    from workers.data.synth import generate_dataset

    generate_dataset(folder, n_train=n, n_val=1, size=size, seed=123)
    return sorted((folder / "leftImg8bit" / "train").rglob("*.png"))


def timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def rss_child(paths_file: str, cache_dir: str) -> None:
    import resource

    paths = json.loads(Path(paths_file).read_text())
    score_paths(paths, cache_dir=Path(cache_dir), use_cache=False, batch_size=4)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def peak_rss_mb(paths: list[Path], tmp: Path) -> int:
    f = tmp / f"paths{len(paths)}.json"
    f.write_text(json.dumps([str(p) for p in paths]))
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(f), str(tmp / "rsscache")],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--rss-child", nargs=2)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        print(f"generating {args.images} synthetic 1024x2048 PNGs ...", flush=True)
        paths = make_pngs(tmp / "big", args.images, (1024, 2048))
        mb = sum(p.stat().st_size for p in paths) / len(paths) / 2**20
        print(f"mean PNG size {mb:.2f} MiB")

        torch.set_num_threads(1)
        decoded = [read_rgb(p) for p in paths[:4]]
        batch = torch.from_numpy(np.stack(decoded))
        t_score = timed(lambda: sc_mean(batch)) / len(decoded)
        t_decode = timed(lambda: [read_rgb(p) for p in paths], repeats=2) / len(paths)
        print(f"\n[single thread]  Eq. 1 on decoded tensors: {1 / t_score:6.1f} img/s ({t_score * 1e3:.1f} ms/img)")
        print(f"[single thread]  PNG decode alone:         {1 / t_decode:6.1f} img/s ({t_decode * 1e3:.1f} ms/img)")
        print(f"[single thread]  scoring CPU cost / decode CPU cost: {100 * t_score / t_decode:.1f}%")

        torch.set_num_threads(1)
        threads = 1
        def decode_pool():
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(read_rgb, paths))
        t_pool_decode = timed(decode_pool, repeats=3)
        t_e2e = timed(lambda: score_paths(paths, use_cache=False, threads=threads), repeats=3)
        print(f"\n[pipelined, {threads} decode thread + scoring on the main thread, 2 cores]")
        print(f"  decode only:            {len(paths) / t_pool_decode:6.1f} img/s")
        print(f"  decode + Eq. 1 (e2e):   {len(paths) / t_e2e:6.1f} img/s")
        print(f"  scoring adds {100 * (t_e2e / t_pool_decode - 1):+.1f}% to the decoding time (goal <= 5%)")

        print("\n[cache] writing 3000 small PNGs ...", flush=True)
        small = tmp / "small"
        small.mkdir()
        rng = np.random.default_rng(0)
        many = []
        for i in range(3000):
            p = small / f"{i:05d}.png"
            Image.fromarray(rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)).save(p, compress_level=0)
            many.append(p)
        cache = tmp / "cache"
        t_cold = timed(lambda: score_paths(many, cache_dir=cache), repeats=1)
        t_warm = timed(lambda: score_paths(many, cache_dir=cache), repeats=3)
        print(f"  first run {t_cold:.2f} s, cached re-run over 3000 images {t_warm * 1e3:.0f} ms (goal < 1 s)")

        print("\n[memory] peak RSS scoring N vs 4N 1024x2048 images (fresh processes)")
        n = max(2, len(paths) // 4)
        r1 = peak_rss_mb(paths[:n], tmp)
        r4 = peak_rss_mb(paths[: 4 * n], tmp)
        print(f"  {n} images: {r1} MiB, {4 * n} images: {r4} MiB "
              f"(ratio {r4 / r1:.2f}; independent of dataset size if ~1)")


if __name__ == "__main__":
    main()
