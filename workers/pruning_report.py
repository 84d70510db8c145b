"""The pruning report: what ANS removed, per header layer (paper Fig. 4 and Table 7).

Layers are split into *multi-scale aggregation* layers (those under one of the model's
``multiscale_modules``, e.g. DeepLabv3+'s ASPP) and *other* layers. For each Conv2d/Linear
of the header and the classifier: output channels and weights before/after. The classifier's
outputs never change; its input channels (and weights) shrink with the header's last layer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["pruning_report", "plot_pruning_report"]


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def pruning_report(original: Mapping[str, Mapping[str, int]], current: Mapping[str, Mapping[str, int]],
                   multiscale_modules: Sequence[str], classifier_name: str | None = None,
                   **context: Any) -> dict[str, Any]:
    """Build the report (JSON-able) from layer shapes before and after pruning.

    Args:
        original, current: ``{layer: {"out", "in", "params"}}`` as from
            :func:`workers.dance.ans.header_layer_shapes` on the unpruned and pruned model.
        multiscale_modules: dotted names of the multi-scale aggregation submodules.
        classifier_name: dotted name of the classifier; its layers are reported as kind
            "classifier" and left out of the header totals.
        **context: extra top-level keys (stage, target_ratio, ...).

    Returns:
        ``{"layers": [{name, kind, out_before, out_after, in_before, in_after, params_before,
        params_after, pruned_fraction}], "summary": {kind: {channels_before, channels_after,
        pruned_channel_fraction, params_before, params_after, pruned_params}}, ...context}``.
        ``kind`` is "multiscale", "other" or "classifier"; the summary's "header" row sums
        the first two.
    """
    layers = []
    for name, before in original.items():
        after = current.get(name, before)
        if name not in current:
            raise ValueError(f"layer {name!r} of the original header is missing from the pruned model")
        if classifier_name and _under(name, [classifier_name]):
            kind = "classifier"
        else:
            kind = "multiscale" if _under(name, multiscale_modules) else "other"
        layers.append({"name": name, "kind": kind,
                       "out_before": before["out"], "out_after": after["out"],
                       "in_before": before["in"], "in_after": after["in"],
                       "params_before": before["params"], "params_after": after["params"],
                       "pruned_fraction": 1.0 - after["out"] / before["out"] if before["out"] else 0.0})
    summary: dict[str, dict[str, float]] = {}
    for kind in ("multiscale", "other", "classifier", "header"):
        rows = [r for r in layers if (r["kind"] == kind or (kind == "header" and r["kind"] != "classifier"))]
        cb = sum(r["out_before"] for r in rows)
        ca = sum(r["out_after"] for r in rows)
        pb = sum(r["params_before"] for r in rows)
        pa = sum(r["params_after"] for r in rows)
        summary[kind] = {"layers": len(rows), "channels_before": cb, "channels_after": ca,
                         "pruned_channel_fraction": 1.0 - ca / cb if cb else 0.0,
                         "params_before": pb, "params_after": pa, "pruned_params": pb - pa}
    return {"layers": layers, "summary": summary, "multiscale_modules": list(multiscale_modules), **context}


def plot_pruning_report(report: Mapping[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Save the report as a PNG: channels per layer before/after, coloured by kind (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = [r for r in report["layers"] if r["kind"] != "classifier"]
    colours = {"multiscale": "tab:red", "other": "tab:blue"}
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(max(8.0, 0.35 * len(rows) + 4), 4.5),
                                  gridspec_kw={"width_ratios": [max(len(rows), 1), 3]})
    xs = range(len(rows))
    ax.bar(xs, [r["out_before"] for r in rows], color="lightgray", label="before")
    ax.bar(xs, [r["out_after"] for r in rows], color=[colours[r["kind"]] for r in rows], label="after")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["name"].split(".", 1)[-1] for r in rows], rotation=90, fontsize=6)
    ax.set_ylabel("output channels")
    ax.set_title(title or "channels per header layer (red: multi-scale aggregation)")
    ax.legend(fontsize=8)
    s = report["summary"]
    kinds = ["multiscale", "other", "header"]
    ax2.bar(kinds, [100 * s[k]["pruned_channel_fraction"] for k in kinds],
            color=[colours.get(k, "tab:gray") for k in kinds])
    ax2.set_ylabel("pruned channels (%)")
    ax2.set_ylim(0, 100)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
