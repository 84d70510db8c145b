"""The complexity scoring of Eq. 1 as a small ONNX model, so a board measures its cost too.

DANCE inference needs each image's p (from SC_mean), so the expected energy per image on a
board is Σ_k fraction_k · J_k **plus** the energy of scoring the image at its stored size.
The agent measures models, so scoring is expressed as one: BT.601 luma (1×1 conv), edge
(replicate) padding, both 3×3 Sobel kernels (one conv), √(s_h² + s_v²), mean. It computes the
same number as :func:`workers.dance.complexity.sc_mean` (checked in tests/orchestrator/boards).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from workers.dance.complexity import BT601


def build_scoring_onnx(path: str | Path, height: int, width: int) -> Path:
    """Write the Eq. 1 scorer for (1, 3, H, W) float RGB in [0, 255] → SC_mean (1, 1, 1, 1)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    luma = np.array(BT601, dtype=np.float32).reshape(1, 3, 1, 1)
    sobel_h = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)
    sobel = np.stack([sobel_h, sobel_h.T])[:, None]  # (2, 1, 3, 3): s_h and s_v
    inits = [numpy_helper.from_array(luma, "w_luma"), numpy_helper.from_array(sobel, "w_sobel"),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64), "pads"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_c")]
    nodes = [
        helper.make_node("Conv", ["input", "w_luma"], ["gray"]),
        helper.make_node("Pad", ["gray", "pads"], ["padded"], mode="edge"),
        helper.make_node("Conv", ["padded", "w_sobel"], ["s"]),
        helper.make_node("Mul", ["s", "s"], ["s2"]),
        helper.make_node("ReduceSum", ["s2", "axis_c"], ["m2"], keepdims=1),
        helper.make_node("Sqrt", ["m2"], ["mag"]),
        helper.make_node("ReduceMean", ["mag"], ["sc_mean"], axes=[1, 2, 3], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes, "dance_eq1_scoring",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, int(height), int(width)])],
        [helper.make_tensor_value_info("sc_mean", TensorProto.FLOAT, [1, 1, 1, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7  # readable by the onnxruntime/TensorRT of JetPack 4.6
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def stored_sizes(config: dict[str, Any] | None) -> list[tuple[int, int, float]] | None:
    """(H, W, fraction) of the validation images at their stored size, when the checkpoint's
    training config has CAD on (inference then scores every image); else None."""
    if not isinstance(config, dict) or not (config.get("slimming") or {}).get("cad", False) or "data" not in config:
        return None
    from workers.config import DataConfig
    from workers.data.datasets import open_dataset

    try:
        data = DataConfig.model_validate(config["data"])
        ds = open_dataset(data.kind, data.root, data.val_split)
    except Exception:  # the dataset is not on this machine: scoring cost cannot be placed
        return None
    counts: dict[tuple[int, int], int] = {}
    for i in range(len(ds)):
        w, h = ds.image_size(i)
        counts[(h, w)] = counts.get((h, w), 0) + 1
    n = sum(counts.values())
    return [(h, w, c / n) for (h, w), c in sorted(counts.items(), key=lambda kv: -kv[1])] if n else None
