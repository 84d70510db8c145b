"""Export manifests: one model file per resolution bucket.

``manifest.json`` (written by the project's exporter)::

    {"schema": 1, "format": "onnx" | "torchscript", "num_classes": 19,
     "class_names": [...], "cdf": {"distribution": "maxwell", "loc": .., "scale": ..},
     "buckets": [{"height": 512, "width": 1024, "file": "model_512x1024.onnx",
                  "fraction": 0.25}, ...]}

File paths are relative to the manifest.  Inputs are NCHW float32, batch 1, named
``input``; the output is ``logits``.
"""

import json
import os

from .errors import AgentError

FORMAT_RUNTIMES = {
    "onnx": ("onnxruntime", "trtexec"),
    "torchscript": ("torchscript",),
}


def load_manifest(path):
    """Parsed and checked manifest with absolute bucket paths."""
    if not os.path.isfile(path):
        raise AgentError("bad_model", "manifest not found: %s" % path)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, IOError, ValueError) as e:
        raise AgentError("bad_model", "manifest %s is not valid JSON: %s" % (path, e))
    if not isinstance(data, dict):
        raise AgentError("bad_model", "manifest %s: top level must be an object" % path)
    schema = data.get("schema")
    if schema != 1:
        raise AgentError("bad_model", "manifest %s: unsupported schema %r (this agent "
                         "reads schema 1)" % (path, schema))
    fmt = data.get("format")
    if fmt not in FORMAT_RUNTIMES:
        raise AgentError("bad_model", "manifest %s: format must be onnx or torchscript, "
                         "not %r" % (path, fmt))
    buckets = data.get("buckets")
    if not isinstance(buckets, list) or not buckets:
        raise AgentError("bad_model", "manifest %s: no buckets" % path)
    base = os.path.dirname(os.path.abspath(path))
    out = []
    for i, b in enumerate(buckets):
        try:
            h = int(b["height"])
            w = int(b["width"])
            rel = b["file"]
        except (KeyError, TypeError, ValueError):
            raise AgentError("bad_model", "manifest %s: bucket %d needs height, width "
                             "and file" % (path, i))
        frac = b.get("fraction")
        if frac is not None:
            try:
                frac = float(frac)
            except (TypeError, ValueError):
                raise AgentError("bad_model", "manifest %s: bucket %d has a bad "
                                 "fraction %r" % (path, i, frac))
            if frac < 0:
                raise AgentError("bad_model", "manifest %s: bucket %d has a negative "
                                 "fraction" % (path, i))
        if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
            raise AgentError("bad_model", "manifest %s: bucket file %r must be relative "
                             "to the manifest folder" % (path, rel))
        out.append({"height": h, "width": w, "file": rel, "fraction": frac,
                    "path": os.path.join(base, rel)})
    data = dict(data)
    data["buckets"] = out
    data["path"] = os.path.abspath(path)
    return data


def check_runtime(manifest, runtime):
    allowed = FORMAT_RUNTIMES[manifest["format"]]
    if runtime not in allowed:
        raise AgentError("usage", "manifest format %r runs with --runtime %s, not %s"
                         % (manifest["format"], " or ".join(allowed), runtime))
