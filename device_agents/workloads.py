"""In-process workloads: one ``step()`` is one inference (or one SGD training step)
of batch ``images_per_step``.  Runtimes are imported here, lazily, never at the
agent's module level."""

import os
import sys
import warnings

from .errors import AgentError


def parse_shape(text):
    """"1x3x512x1024" (or comma separated) -> (1, 3, 512, 1024)."""
    if text is None:
        return None
    if isinstance(text, (tuple, list)):
        return tuple(int(x) for x in text)
    parts = [p for p in text.replace(",", "x").lower().split("x") if p.strip()]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise AgentError("usage", "bad shape %r: expected e.g. 1x3x512x1024" % (text,))
    if not dims or any(d <= 0 for d in dims):
        raise AgentError("usage", "bad shape %r: dimensions must be positive" % (text,))
    return dims


def check_model_file(path):
    if not path:
        raise AgentError("usage", "no model given")
    if not os.path.exists(path):
        raise AgentError("bad_model", "model file not found: %s" % path)
    if not os.path.isfile(path):
        raise AgentError("bad_model", "model path is not a file: %s" % path)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except (OSError, IOError) as e:
        raise AgentError("bad_model", "model file not readable: %s (%s)" % (path, e))
    if not head:
        raise AgentError("bad_model", "model file is empty: %s" % path)


def _import_error(runtime, e):
    return AgentError("missing_runtime", "%s is not usable with %s (Python %s): %s: %s"
                      % (runtime, sys.executable, sys.version.split()[0],
                         e.__class__.__name__, e))


class Workload(object):
    """Base class of a measured workload."""

    runtime = None
    external = False  # True: runs in its own process (trtexec), not step by step
    mode = "inference"  # or "train"
    images_per_step = 1

    def prepare(self):
        """Load the model and allocate inputs; raise AgentError on failure."""

    def step(self):
        """One synchronous inference or training step (device synchronised)."""
        raise NotImplementedError

    def describe(self):
        return {"runtime": self.runtime, "mode": self.mode}

    def close(self):
        pass


# ------------------------------------------------------------------------------------
_ORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


class OnnxRuntimeWorkload(Workload):
    """Inference of an ONNX model with onnxruntime (CPU or CUDA provider).  Inputs
    are random with the model's static shape, or the shape given for dynamic dims.
    ``session.run`` returns host arrays, so each step is synchronous."""

    runtime = "onnxruntime"

    def __init__(self, model, device="cpu", input_shape=None, threads=0, seed=0):
        self.model = model
        self.device = device
        self.input_shape = parse_shape(input_shape)
        self.threads = int(threads or 0)
        self.seed = seed
        self.session = None
        self.feeds = None
        self.info = {}

    def prepare(self):
        check_model_file(self.model)
        try:
            import numpy as np
            import onnxruntime as ort
        except Exception as e:  # ImportError, or a broken install raising anything
            raise _import_error("onnxruntime", e)
        want = _ORT_PROVIDERS.get(self.device)
        if want is None:
            raise AgentError("usage", "onnxruntime device must be one of %s"
                             % ", ".join(sorted(_ORT_PROVIDERS)))
        available = list(ort.get_available_providers())
        if want not in available:
            raise AgentError("missing_runtime", "onnxruntime %s has no %s (available: %s)"
                             % (ort.__version__, want, ", ".join(available)))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if self.threads:
            so.intra_op_num_threads = self.threads
        try:
            sess = ort.InferenceSession(self.model, sess_options=so, providers=[want])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
            raise AgentError("bad_model", "onnxruntime cannot load %s: %s"
                             % (self.model, str(e).strip().splitlines()[0] if str(e) else e))
        used = sess.get_providers()
        if not used or used[0] != want:
            raise AgentError("missing_runtime", "onnxruntime did not take %s (took %s)"
                             % (want, ", ".join(used)))
        rng = np.random.RandomState(self.seed)
        feeds = {}
        shapes = {}
        inputs = sess.get_inputs()
        main = None
        for inp in inputs:
            if inp.name == "input":
                main = inp
        if main is None and inputs:
            main = inputs[0]
        for inp in inputs:
            shape = self._resolve(inp, inp is main)
            dtype = _ORT_DTYPES.get(inp.type)
            if dtype is None:
                raise AgentError("bad_model", "input %r has unsupported type %s"
                                 % (inp.name, inp.type))
            if dtype.startswith("float"):
                arr = rng.standard_normal(shape).astype(dtype)
            elif dtype == "bool":
                arr = np.zeros(shape, dtype=bool)
            else:
                arr = np.zeros(shape, dtype=dtype)
            feeds[inp.name] = arr
            shapes[inp.name] = list(shape)
        self.session = sess
        self.feeds = feeds
        main_shape = shapes[main.name] if main is not None else []
        self.images_per_step = int(main_shape[0]) if main_shape else 1
        self.info = {
            "runtime": self.runtime,
            "runtime_version": ort.__version__,
            "provider": want,
            "mode": self.mode,
            "input_shapes": shapes,
            "outputs": [o.name for o in sess.get_outputs()],
            "threads": self.threads or None,
        }

    def _resolve(self, inp, is_main):
        dims = list(inp.shape)
        user = self.input_shape if is_main else None
        if user is not None and len(user) != len(dims):
            raise AgentError("bad_model", "input %r has %d dims (%s) but the requested "
                             "shape is %s" % (inp.name, len(dims), dims,
                                              "x".join(str(d) for d in user)))
        out = []
        for i, d in enumerate(dims):
            static = isinstance(d, int) and d > 0
            if static:
                if user is not None and user[i] != d:
                    raise AgentError(
                        "bad_model", "input %r is static %s but the requested shape is %s"
                        % (inp.name, "x".join(str(x) for x in dims),
                           "x".join(str(x) for x in user)))
                out.append(d)
            elif user is not None:
                out.append(user[i])
            else:
                raise AgentError("usage", "input %r has dynamic dims %s: give --input-shape"
                                 % (inp.name, dims))
        return tuple(out)

    def step(self):
        self.session.run(None, self.feeds)

    def describe(self):
        return dict(self.info) if self.info else {"runtime": self.runtime, "mode": self.mode}

    def close(self):
        self.session = None
        self.feeds = None


# ------------------------------------------------------------------------------------
class TorchScriptWorkload(Workload):
    """A TorchScript model under torch: inference, or (train_steps > 0) SGD training
    steps on synthetic input of the given shape and random labels over the model's
    classes.  Segmentation logits smaller than the input are upsampled to the label
    size as in training.  CUDA steps end with ``torch.cuda.synchronize()``."""

    runtime = "torchscript"

    def __init__(self, model, device="cpu", input_shape=None, train=False, lr=0.01,
                 num_classes=None, threads=0, seed=0):
        self.model_path = model
        self.device = device
        self.input_shape = parse_shape(input_shape)
        self.mode = "train" if train else "inference"
        self.lr = float(lr)
        self.num_classes = num_classes
        self.threads = int(threads or 0)
        self.seed = seed
        self.info = {}

    def prepare(self):
        check_model_file(self.model_path)
        try:
            import torch
        except Exception as e:  # noqa: BLE001
            raise _import_error("torch", e)
        if self.device not in ("cpu", "cuda"):
            raise AgentError("usage", "torchscript device must be cpu or cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise AgentError("missing_runtime", "torch %s has no usable CUDA device"
                             % torch.__version__)
        if self.input_shape is None:
            raise AgentError("usage", "a TorchScript model needs --input-shape "
                             "(or a manifest bucket)")
        if self.threads:
            torch.set_num_threads(self.threads)
        dev = torch.device(self.device)
        try:
            with warnings.catch_warnings():
                # torch 2.x deprecates TorchScript; the boards' torch 1.x does not
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(self.model_path, map_location=dev)
        except Exception as e:  # noqa: BLE001
            raise AgentError("bad_model", "torch cannot load %s as TorchScript: %s"
                             % (self.model_path, str(e).strip().splitlines()[0] if str(e)
                                else e.__class__.__name__))
        gen = torch.Generator(device="cpu")
        gen.manual_seed(self.seed)
        x = torch.randn(*self.input_shape, generator=gen).to(dev)
        self.torch = torch
        self.model = model
        self.x = x
        self.sync = torch.cuda.synchronize if self.device == "cuda" else None
        self.images_per_step = int(self.input_shape[0])
        classes = None
        if self.mode == "train":
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            if not params:
                raise AgentError("bad_model", "%s has no trainable parameters"
                                 % self.model_path)
            self.opt = torch.optim.SGD(params, lr=self.lr, momentum=0.9)
            try:
                logits = self._logits(model(x))
            except Exception as e:  # noqa: BLE001
                raise AgentError("bad_model", "forward pass failed on input %s: %s"
                                 % ("x".join(str(d) for d in self.input_shape), e))
            if logits.dim() < 2:
                raise AgentError("bad_model", "model output has shape %s: no class dim"
                                 % (tuple(logits.shape),))
            classes = int(logits.shape[1])
            if self.num_classes is not None and int(self.num_classes) != classes:
                raise AgentError("bad_model", "model outputs %d classes but %d were "
                                 "expected" % (classes, int(self.num_classes)))
            if logits.dim() == 2:
                tshape = (self.input_shape[0],)
            else:
                tshape = (self.input_shape[0],) + tuple(self.input_shape[2:])
            self.target = torch.randint(0, classes, tshape, generator=gen).to(dev)
            self.opt.zero_grad()
        else:
            model.eval()
            try:
                with torch.no_grad():
                    out = self._logits(model(x))
                classes = int(out.shape[1]) if out.dim() >= 2 else None
            except Exception as e:  # noqa: BLE001
                raise AgentError("bad_model", "forward pass failed on input %s: %s"
                                 % ("x".join(str(d) for d in self.input_shape), e))
        self.info = {
            "runtime": self.runtime,
            "runtime_version": torch.__version__,
            "device": self.device,
            "mode": self.mode,
            "input_shapes": {"input": list(self.input_shape)},
            "num_classes": classes,
            "threads": torch.get_num_threads(),
        }
        if self.mode == "train":
            self.info["optimizer"] = {"name": "SGD", "lr": self.lr, "momentum": 0.9}

    def _logits(self, out):
        torch = self.torch
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, dict):
            for key in ("logits", "out"):
                if key in out:
                    return out[key]
            return list(out.values())[0]
        if isinstance(out, (tuple, list)):
            return out[0]
        raise AgentError("bad_model", "cannot find logits in model output of type %s"
                         % type(out).__name__)

    def step(self):
        torch = self.torch
        if self.mode == "train":
            self.opt.zero_grad()
            logits = self._logits(self.model(self.x))
            target = self.target
            if logits.dim() > 2 and tuple(logits.shape[2:]) != tuple(target.shape[1:]):
                logits = torch.nn.functional.interpolate(
                    logits, size=tuple(target.shape[1:]), mode="bilinear",
                    align_corners=False)
            loss = torch.nn.functional.cross_entropy(logits, target)
            loss.backward()
            self.opt.step()
        else:
            with torch.no_grad():
                self.model(self.x)
        if self.sync is not None:
            self.sync()

    def describe(self):
        return dict(self.info) if self.info else {"runtime": self.runtime, "mode": self.mode}

    def close(self):
        self.model = None
        self.x = None
