"""Score a whole dataset with Eq. 1, streaming, and cache the result on disk.

Decoding runs in a small thread pool (Pillow releases the GIL while it inflates PNGs)
with a bounded look-ahead, so peak memory depends on the batch size, not on the
dataset. Scores are cached per file, keyed by (path, size, mtime): a second run, or
every trial of a sweep, only stats the files; a changed file is re-scored alone.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from workers.dance.complexity import sc_mean
from workers.data.imageio import read_rgb

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when Eq. 1's implementation changes meaning
Progress = Callable[[int, int], None]


def default_cache_dir() -> Path:
    """``$DANCE_CACHE_DIR``, else ``~/.cache/dance``."""
    env = os.environ.get("DANCE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "dance"


def _stat_key(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.empty(len(paths), dtype=np.int64)
    mtimes = np.empty(len(paths), dtype=np.int64)
    for i, p in enumerate(paths):
        st = os.stat(p)
        sizes[i], mtimes[i] = st.st_size, st.st_mtime_ns
    return sizes, mtimes


def _cache_file(cache_dir: Path, paths: Sequence[Path]) -> Path:
    digest = hashlib.sha256(f"v{CACHE_VERSION}\n".encode())
    for p in paths:
        digest.update(str(p).encode())
        digest.update(b"\n")
    return cache_dir / "complexity" / f"{digest.hexdigest()[:32]}.npz"


def _load_cache(file: Path, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    try:
        with np.load(file) as z:
            sizes, mtimes, sc = z["sizes"], z["mtimes"], z["sc"]
    except FileNotFoundError:
        return None
    except Exception as exc:  # a truncated or foreign file is just a cache miss
        log.warning("ignoring unreadable complexity cache %s (%s)", file, exc)
        return None
    if len(sc) != n:
        return None
    return sizes, mtimes, sc


def _save_cache(file: Path, sizes: np.ndarray, mtimes: np.ndarray, sc: np.ndarray) -> None:
    """Atomic write; a full disk or read-only cache only costs the next run a re-score."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, sizes=sizes, mtimes=mtimes, sc=sc)
            os.replace(tmp, file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.warning("could not write complexity cache %s (%s); scores were computed but not cached", file, exc)


def _batches(
    paths: Sequence[Path], indices: Iterable[int], batch_size: int, threads: int
) -> Iterable[tuple[list[int], torch.Tensor]]:
    """Decoded batches of same-sized images, read ahead by at most 2·batch_size files."""
    lookahead = max(2 * batch_size, threads)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque = deque()
        it = iter(indices)
        for i in it:
            pending.append((i, pool.submit(read_rgb, paths[i])))
            if len(pending) >= lookahead:
                break
        group_idx: list[int] = []
        group: list[np.ndarray] = []
        while pending:
            i, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(read_rgb, paths[nxt])))
            img = fut.result()
            if group and (img.shape != group[0].shape or len(group) == batch_size):
                yield group_idx, _as_batch(group)
                group_idx, group = [], []
            group_idx.append(i)
            group.append(img)
        if group:
            yield group_idx, _as_batch(group)


def _as_batch(images: list[np.ndarray]) -> torch.Tensor:
    """(N, H, W, 3) tensor; a single image is viewed, not copied."""
    if len(images) > 1:
        return torch.from_numpy(np.stack(images))
    with warnings.catch_warnings():  # decoded arrays are read-only; Eq. 1 only reads them
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(images[0])[None]


def score_paths(
    paths: Sequence[Path | str],
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    device: str = "cpu",
    batch_size: int = 4,
    threads: int | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """SC_mean (Eq. 1) for every image file, in order, reusing cached scores where the file is unchanged."""
    paths = [Path(p).resolve() for p in paths]
    n = len(paths)
    try:
        sizes, mtimes = _stat_key(paths)
    except FileNotFoundError as exc:
        from workers.data.datasets.base import DatasetError

        raise DatasetError(f"{exc.filename}: file not found") from None
    cache_file = _cache_file(Path(cache_dir) if cache_dir else default_cache_dir(), paths)
    sc = np.full(n, np.nan)
    todo = np.arange(n)
    if use_cache:
        cached = _load_cache(cache_file, n)
        if cached is not None:
            fresh = (cached[0] == sizes) & (cached[1] == mtimes)
            sc[fresh] = cached[2][fresh]
            todo = np.flatnonzero(~fresh)
    done = n - len(todo)
    if progress:
        progress(done, n)
    if len(todo):
        threads = threads or max(1, min(4, (os.cpu_count() or 2) - 1))
        if torch.device(device).type == "cpu":
            batch_size = 1  # no stacking copy; on the CPU, Eq. 1 gains nothing from batches
        for idx, batch in _batches(paths, todo.tolist(), batch_size, threads):
            sc[idx] = sc_mean(batch.to(device)).numpy()
            done += len(idx)
            if progress:
                progress(done, n)
        if use_cache:
            _save_cache(cache_file, sizes, mtimes, sc)
    return sc


def score_dataset(dataset, **kwargs) -> np.ndarray:
    """SC_mean for every image of a :class:`~workers.data.datasets.base.SegDataset`.

    With ``$DANCE_SCORING_TRACE`` set, each call appends ``pid images`` to that file: how a
    test shows that a sweep scores on its driver only, never in a trial.
    """
    paths = dataset.image_paths()
    trace = os.environ.get("DANCE_SCORING_TRACE")
    if trace:
        with open(trace, "a") as f:
            f.write(f"{os.getpid()} {len(paths)}\n")
    return score_paths(paths, **kwargs)
