"""Export a trained (pruned) model for the boards: ONNX or TorchScript, one file per size bucket.

DANCE resizes every test image by its complexity (CAD), so a deployed model sees a handful
of quantised input sizes. TensorRT 8.2 on a Jetson TX2 wants static shapes and ONNX opset
≤ 13, so each bucket gets its own file:

* ONNX (``torch.onnx.export``, TorchScript-based exporter, opset 13 by default, batch 1,
  input ``"input"`` NCHW float32, output ``"logits"``), each file checked with
  ``onnx.checker`` and, unless disabled, against PyTorch in onnxruntime;
* TorchScript (``torch.jit.trace`` at the bucket's shape) for on-device training. It is
  traced in eval mode: BatchNorm uses its running statistics (frozen-BN fine-tuning), the
  only mode that works at batch 1 with the headers' 1×1 pooled branches. Parameters keep
  ``requires_grad``, so backward and an optimizer step run on the traced module.

``manifest.json`` (read by the device agent; exactly these keys)::

    {"schema": 1, "format": "onnx"|"torchscript", "num_classes": int, "class_names": [...],
     "cdf": {"distribution": "maxwell", "loc": .., "scale": ..} | null, "model": model.spec,
     "size_quantum": int,
     "buckets": [{"height": H, "width": W, "file": "model_HxW.onnx", "fraction": share}, ...]}
"""
from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from workers.dance.cdf import MaxwellCDF

__all__ = ["Bucket", "ExportResult", "parse_buckets", "buckets_from_config", "export_model", "export_checkpoint",
           "ONNX_TOLERANCE", "MAX_OPSET", "ExportError"]

MAX_OPSET = 13
# Max |ONNX − PyTorch| allowed, relative to the logits' scale max(1, max|logit|). Measured
# on the four paper models: ~1e-6–1e-5 relative; float32 reassociation in onnxruntime's
# kernels is the only source of difference.
ONNX_TOLERANCE = 1e-4
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


class ExportError(Exception):
    """Bad export request (size, format, missing data for the buckets); the message says what."""


@dataclass(frozen=True)
class Bucket:
    """One static input size and the share of images that use it."""

    height: int
    width: int
    fraction: float

    @property
    def name(self) -> str:
        return f"{self.height}x{self.width}"


@dataclass
class ExportResult:
    manifest: dict[str, Any]
    out_dir: Path
    checks: list[dict[str, Any]] = field(default_factory=list)  # per bucket: file, max_abs_diff, relative, ok


def parse_buckets(text: str) -> list[Bucket]:
    """``"512x1024,256x512"`` (equal shares) or ``"512x1024:0.7,256x512:0.3"`` → buckets.

    Shares are normalised to sum to 1.
    """
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ExportError("--buckets is empty; give sizes like 512x1024,256x512")
    sizes, shares = [], []
    for item in items:
        size, _, share = item.partition(":")
        try:
            h, w = (int(v) for v in size.lower().split("x"))
            s = float(share) if share else 1.0
        except ValueError:
            raise ExportError(f"bad bucket {item!r}: expected HxW or HxW:FRACTION, e.g. 512x1024:0.5") from None
        if h <= 0 or w <= 0 or s <= 0:
            raise ExportError(f"bad bucket {item!r}: sizes and fractions must be positive")
        sizes.append((h, w))
        shares.append(s)
    if len(set(sizes)) != len(sizes):
        raise ExportError(f"--buckets names a size twice: {text}")
    total = sum(shares)
    return [Bucket(h, w, s / total) for (h, w), s in zip(sizes, shares)]


def buckets_from_config(config: dict[str, Any], cdf: MaxwellCDF | None, quantum: int, min_size: int,
                        progress: Callable[[int, int], None] | None = None) -> list[Bucket]:
    """The CAD-quantised sizes of the validation images named by a training config, with shares.

    ``config`` is the training config dict (``extra["config"]`` of a checkpoint): its
    ``data`` section names the dataset and ``slimming`` the CAD range. Complexity scores
    come from the shared score cache (scored once if absent).
    """
    from workers.config import DataConfig
    from workers.dance.slimming import SlimmingConfig, dance_sizes
    from workers.data.datasets import open_dataset

    try:
        data = DataConfig.model_validate(config["data"])
        slim = SlimmingConfig.model_validate(config.get("slimming", {}))
    except (KeyError, ValueError, TypeError) as exc:
        raise ExportError(f"the checkpoint's config has no usable data/slimming section ({exc}); "
                          "give --buckets") from None
    ds = open_dataset(data.kind, data.root, data.val_split)
    if len(ds) == 0:
        raise ExportError(f"{data.root}: the {data.val_split} split has no images; give --buckets")
    image_sizes = [(h, w) for (w, h) in (ds.image_size(i) for i in range(len(ds)))]
    if slim.cad:
        if cdf is None:
            raise ExportError("CAD is on in the checkpoint's config but the checkpoint has no CDF; give --buckets")
        from workers.data.scoring import score_dataset

        sc = score_dataset(ds, cache_dir=data.cache_dir, batch_size=data.score_batch, progress=progress)
        p = cdf.p(sc)
    else:
        p = np.ones(len(ds))
    sizes = dance_sizes(image_sizes, p, slim, quantum, min_size)
    counts: dict[tuple[int, int], int] = {}
    for s in sizes:
        counts[s] = counts.get(s, 0) + 1
    # Largest first: the device agent builds the most expensive engine first and fails fast.
    return [Bucket(h, w, c / len(sizes))
            for (h, w), c in sorted(counts.items(), key=lambda kv: (-kv[0][0] * kv[0][1], kv[0]))]


def _check_size(model: nn.Module, b: Bucket) -> None:
    q = int(getattr(model, "size_quantum", 1))
    lo = int(getattr(model, "min_size", 1))
    if b.height % q or b.width % q or b.height < lo or b.width < lo:
        raise ExportError(f"bucket {b.name} is not a valid input size for this model: "
                          f"sides must be multiples of {q} and at least {lo}")


@contextlib.contextmanager
def _exportable_adaptive_pool() -> Iterator[None]:
    """Let custom models' ``F.adaptive_avg_pool2d`` export at sizes that are not multiples of the bins.

    The TorchScript ONNX exporter refuses those; for a static shape the same windows are two
    constant matrix products (exact). The built-in models already do this themselves.
    """
    import torch.nn.functional as F

    original = F.adaptive_avg_pool2d

    def pool(x: torch.Tensor, output_size: Any) -> torch.Tensor:
        oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
        h, w = int(x.shape[-2]), int(x.shape[-1])
        oh, ow = oh or h, ow or w
        if h % oh == 0 and w % ow == 0:
            return original(x, (oh, ow))

        def mat(n_in: int, n_out: int) -> torch.Tensor:
            m = torch.zeros(n_out, n_in, dtype=x.dtype)
            for i in range(n_out):
                a, b = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
                m[i, a:b] = 1.0 / (b - a)
            return m

        return torch.matmul(torch.matmul(mat(h, oh), x), mat(w, ow).t())

    F.adaptive_avg_pool2d = pool
    try:
        yield
    finally:
        F.adaptive_avg_pool2d = original


# Ops that only compute shapes and sizes: folded to constants when all their inputs are known.
_FOLDABLE = {"Shape", "Slice", "Concat", "Gather", "Unsqueeze", "Squeeze", "Cast", "Mul", "Div", "Add", "Sub",
             "Floor", "Ceil", "Reshape", "Identity", "Constant", "ConstantOfShape", "Range"}
_FOLD_MAX_ELEMENTS = 64  # shape vectors, never weights


def fold_static_shapes(proto: Any) -> int:
    """Replace shape computations of a static-shape ONNX graph by constants, in place; returns nodes removed.

    The TorchScript exporter writes ``F.interpolate(x, size=(h, w))`` as
    Shape(x) → Slice → Concat(…, (h, w)) → Resize even when every shape is static, and its
    own constant folding cannot fold ``Shape`` of a tensor computed from the input. With the
    input shape fixed, shape inference knows every such shape: each ``Shape`` of a fully
    known tensor becomes a constant, each small shape op whose inputs are all constants is
    evaluated (``onnx.reference``), and nodes nobody reads any more are dropped. Resize then
    reads its sizes from an initializer, which is what TensorRT's static-shape parser wants.
    """
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = proto.graph
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    dims: dict[str, list[int] | None] = {}
    for vi in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
        shape = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        dims[vi.name] = None if any(v is None for v in shape) else shape
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer
                                     if int(np.prod(i.dims)) <= _FOLD_MAX_ELEMENTS}
    folded: set[str] = set()  # outputs computed here (become initializers if still read)
    kept = []
    for node in graph.node:
        value = None
        if node.op_type == "Shape" and dims.get(node.input[0]) is not None and not node.attribute:
            value = np.asarray(dims[node.input[0]], dtype=np.int64)
        elif node.op_type in _FOLDABLE and len(node.output) == 1 and all(not n or n in consts for n in node.input):
            try:
                feeds = {n: consts[n] for n in node.input if n}
                value = np.asarray(ReferenceEvaluator(node).run(None, feeds)[0])
            except Exception:  # an op the reference runtime cannot evaluate here: leave it in the graph
                value = None
            if value is not None and value.size > _FOLD_MAX_ELEMENTS:
                value = None
        if value is None:
            kept.append(node)
            continue
        consts[node.output[0]] = value
        folded.add(node.output[0])
    # Drop what nobody reads any more (graph outputs stay).
    needed = {o.name for o in graph.output}
    live = []
    for node in reversed(kept):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(n for n in node.input if n)
    live.reverse()
    removed = len(graph.node) - len(live)
    if not removed:
        return 0
    new_inits = [numpy_helper.from_array(consts[n], n) for n in sorted(folded & needed)]
    old_inits = [i for i in graph.initializer if i.name in needed]
    del graph.node[:]
    graph.node.extend(live)
    del graph.initializer[:]
    graph.initializer.extend(old_inits + new_inits)
    stale = {n for n in folded}
    keep_vi = [vi for vi in graph.value_info if vi.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(keep_vi)
    return removed


def _onnx_export(model: nn.Module, x: torch.Tensor, path: Path, opset: int) -> None:
    import onnx

    with warnings.catch_warnings(), _exportable_adaptive_pool():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=["input"],
                          output_names=["logits"], do_constant_folding=True, export_params=True)
    proto = onnx.load(str(path))
    # Each pass lets shape inference see through the Resizes it made static (ICNet chains them).
    folded = 0
    while (n := fold_static_shapes(proto)):
        folded += n
    if folded:
        onnx.save(proto, str(path))
    onnx.checker.check_model(proto)
    used = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if used > MAX_OPSET:
        raise ExportError(f"{path.name}: exporter produced opset {used} > {MAX_OPSET}")
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if dims != list(x.shape):
        raise ExportError(f"{path.name}: input shape {dims} is not static {list(x.shape)}")


def _onnx_check(path: Path, x: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"input": x.numpy()})[0]
    diff = float(np.abs(got - ref.numpy()).max())
    scale = max(1.0, float(ref.abs().max()))
    return {"max_abs_diff": diff, "relative": diff / scale, "ok": diff <= ONNX_TOLERANCE * scale}


def export_model(model: nn.Module, out_dir: str | Path, fmt: str, buckets: Sequence[Bucket], *,
                 cdf: MaxwellCDF | None = None, class_names: Sequence[str] | None = None,
                 spec: dict[str, Any] | None = None, opset: int = MAX_OPSET, verify: bool = True,
                 log: Callable[[str], None] | None = None, size_quantum: int | None = None) -> ExportResult:
    """Write one file per bucket and ``manifest.json`` into ``out_dir``.

    ``size_quantum`` is the quantum the buckets were cut at (the training run's
    ``train.size_quantum`` when it set one); default the model's own. A board rounds CAD
    sizes to the manifest's quantum, so it must be the one the buckets came from.

    Raises :class:`ExportError` for an unknown format, an opset > 13, a size the model does
    not accept, or (with ``verify``) an ONNX file differing from PyTorch beyond
    :data:`ONNX_TOLERANCE`.
    """
    from workers.dance.ans import unwrap_model

    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose onnx or torchscript")
    if not 7 <= opset <= MAX_OPSET:
        raise ExportError(f"opset must lie in [7, {MAX_OPSET}] (TensorRT 8.2 on a TX2), got {opset}")
    if not buckets:
        raise ExportError("no buckets to export")
    model = unwrap_model(model).cpu().eval()
    for b in buckets:
        _check_size(model, b)
    num_classes = int(getattr(model, "num_classes", 0))
    names = list(class_names) if class_names else [f"class_{i}" for i in range(num_classes)]
    if class_names and num_classes and len(names) != num_classes:
        raise ExportError(f"{len(names)} class names for a model with {num_classes} classes")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checks = []
    entries = []
    gen = torch.Generator().manual_seed(0)
    for b in buckets:
        file = f"model_{b.name}{FORMATS[fmt]}"
        x = torch.randn(1, 3, b.height, b.width, generator=gen)
        with torch.no_grad():
            ref = model(x)
        if not num_classes:
            num_classes = int(ref.shape[1])
            names = names or [f"class_{i}" for i in range(num_classes)]
        if fmt == "onnx":
            _onnx_export(model, x, out / file, opset)
            check = _onnx_check(out / file, x, ref) if verify else {}
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit is deprecated in torch 2.13 but still the format boards run
                traced = torch.jit.trace(model, (x,), check_trace=False)
                traced.save(str(out / file))
                reloaded = torch.jit.load(str(out / file)) if verify else None
            if reloaded is not None:
                with torch.no_grad():
                    got = reloaded(x)
                diff = float((got - ref).abs().max())
                scale = max(1.0, float(ref.abs().max()))
                check = {"max_abs_diff": diff, "relative": diff / scale, "ok": diff <= ONNX_TOLERANCE * scale}
            else:
                check = {}
        checks.append({"file": file, **check})
        if log:
            extra = f"  max|Δ| {check['max_abs_diff']:.2e}" if check else ""
            log(f"  {file}  ({100 * b.fraction:.1f}% of images){extra}")
        if check and not check["ok"]:
            raise ExportError(f"{file}: exported model differs from PyTorch by {check['max_abs_diff']:.3g} "
                              f"(> {ONNX_TOLERANCE:g} × logit scale)")
        entries.append({"height": b.height, "width": b.width, "file": file, "fraction": float(b.fraction)})
    manifest = {
        "schema": 1, "format": fmt, "num_classes": num_classes, "class_names": names,
        "cdf": cdf.to_dict() if cdf is not None else None,
        "model": dict(spec if spec is not None else getattr(model, "spec", {}) or {}),
        "size_quantum": int(size_quantum if size_quantum is not None else getattr(model, "size_quantum", 1)),
        "buckets": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportResult(manifest=manifest, out_dir=out, checks=checks)


def export_checkpoint(path: str | Path, out_dir: str | Path, fmt: str, buckets: Sequence[Bucket] | None = None, *,
                      opset: int = MAX_OPSET, verify: bool = True, log: Callable[[str], None] | None = None,
                      progress: Callable[[int, int], None] | None = None) -> ExportResult:
    """Export a checkpoint; without ``buckets`` they come from its training config (see
    :func:`buckets_from_config`)."""
    from workers.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    model = ckpt.model
    config = ckpt.extra.get("config")
    class_names = ckpt.meta.get("class_names")
    # train.size_quantum, when set, coarsened the sizes the model was trained and evaluated at
    train_cfg = (config.get("train") or {}) if isinstance(config, dict) else {}
    quantum = int(train_cfg.get("size_quantum") or getattr(model, "size_quantum", 1))
    p_mode = ((config.get("slimming") or {}) if isinstance(config, dict) else {}).get("p_mode", "proposed")
    if p_mode != "proposed":
        raise ExportError(f"{path}: trained with slimming.p_mode={p_mode} (a paper Table 6 ablation); boards size "
                          "images by p = CDF(SC), so only p_mode=proposed models can be exported")
    if buckets is None:
        if not isinstance(config, dict) or "data" not in config:
            raise ExportError(f"{path}: the checkpoint carries no training config (extra['config'] with a 'data' "
                              "section), so the resolution buckets are unknown; give --buckets HxW[,HxW...]")
        if log:
            log("computing resolution buckets from the validation images ...")
        buckets = buckets_from_config(config, ckpt.cdf, quantum, int(getattr(model, "min_size", 0)),
                                      progress=progress)
    if not class_names and isinstance(config, dict) and "data" in config:
        try:
            from workers.config import DataConfig
            from workers.data.datasets import open_dataset

            data = DataConfig.model_validate(config["data"])
            class_names = open_dataset(data.kind, data.root, data.val_split).class_names
            if len(class_names) != int(getattr(model, "num_classes", len(class_names))):
                class_names = None  # the model was trained with another label set; do not mislabel
        except Exception:  # class names are a nicety; the export must not fail over them
            class_names = None
    return export_model(model, out_dir, fmt, buckets, cdf=ckpt.cdf, class_names=class_names, opset=opset,
                        verify=verify, log=log, size_quantum=quantum)
