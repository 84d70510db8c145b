"""A trained (pruned) checkpoint as an MLflow Model: ``mlflow.pyfunc.load_model(...).predict(image)``.

The model is the project's own checkpoint, loaded through :func:`workers.checkpoint.load_checkpoint`
(no pickled network): the logged model carries the checkpoint file as an artifact and this
wrapper. Input: one RGB image as a ``(H, W, 3)`` uint8 array (or a batch ``(N, H, W, 3)``);
output: the train-id map(s) ``(H, W)`` / ``(N, H, W)`` as int64, at the input's resolution. The
image is resized to the nearest size the model takes (its size quantum), as inference does at
full resolution (no CAD: a served image has no dataset CDF to score it against).
"""
from __future__ import annotations

import numpy as np

try:  # the wrapper is a PythonModel only where mlflow is installed (always, in this project)
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover
    PythonModel = object  # type: ignore[misc,assignment]


class SegmentationPyfunc(PythonModel):
    """The pyfunc flavour of a DANCE checkpoint (artifact ``checkpoint``)."""

    def load_context(self, context) -> None:
        from workers.checkpoint import load_checkpoint

        self.model = load_checkpoint(context.artifacts["checkpoint"]).model.eval()

    # no type hints here: MLflow would read them as the model's input schema (the signature says it)
    def predict(self, context, model_input, params=None):
        return segment(self.model, np.asarray(model_input))


def segment(model, images: np.ndarray) -> np.ndarray:
    """Train-id maps of ``images`` ((H, W, 3) or (N, H, W, 3), uint8) at their own resolution."""
    import torch
    import torch.nn.functional as F

    from workers.data.slimmed import resize_rgb, to_input
    from workers.models.base import size_rule

    single = images.ndim == 3
    batch = images[None] if single else images
    quantum, min_size = size_rule(model)
    out = []
    with torch.no_grad():
        for rgb in batch.astype(np.uint8):
            h, w = rgb.shape[:2]
            size = tuple(max(min_size, int(round(s / quantum)) * quantum) for s in (h, w))
            x = to_input(resize_rgb(rgb, size))[None]
            logits = F.interpolate(model(x), size=(h, w), mode="bilinear", align_corners=False)
            out.append(logits.argmax(1)[0].numpy().astype(np.int64))
    return out[0] if single else np.stack(out)
