"""One door for optional packages, so a missing one says which extra brings it."""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

from .errors import MissingDependencyError

# module -> (pip distribution, edgeclf extra)
_PROVIDERS = {
    "tensorflow": ("tensorflow", "train"),
    "tf_keras": ("tf-keras", "train"),
    "tensorflow_model_optimization": ("tensorflow-model-optimization", "train"),
    "tf2onnx": ("tf2onnx", "train"),
    "onnx": ("onnx", "train"),
    "matplotlib": ("matplotlib", "report"),
    "onnxruntime": ("onnxruntime", ""),
    "ai_edge_litert": ("ai-edge-litert", ""),
    "hypothesis": ("hypothesis", "dev"),
    "cv2": ("opencv-python-headless", "stream"),
}


# Packages that import TensorFlow themselves: it goes first, quietly (else its start-up lines
# reach the terminal, even on the way to a refusal).
_PULL_IN_TENSORFLOW = ("tf_keras", "keras", "tf2onnx", "tensorflow_model_optimization")


def require(module: str, *, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError naming what to install."""
    if module.split(".")[0] in _PULL_IN_TENSORFLOW and "tensorflow" not in sys.modules:
        import_tensorflow()
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise _missing(module, purpose, exc.msg) from None


def ensure_installed(*modules: str, purpose: str) -> None:
    """Fail before any work starts when an optional package is absent (no import is done)."""
    import importlib.util

    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise _missing(module, purpose, f"No module named {module!r}")


def _missing(module: str, purpose: str | None, detail: str) -> MissingDependencyError:
    top = module.split(".")[0]
    dist, extra = _PROVIDERS.get(top, (top, ""))
    fix = f'pip install "edgeclf[{extra}]"' if extra else f"pip install {dist}"
    need = f", needed for {purpose}," if purpose else ""
    return MissingDependencyError(f"the package '{dist}'{need} is not installed ({detail}); run: {fix}")


def quiet_tensorflow_env() -> None:
    """Set, before TensorFlow is imported, what keeps its start-up noise off the terminal
    and selects Keras 2 (tf_keras), the only Keras that tensorflow-model-optimization supports."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    if not os.environ.get("EDGECLF_VERBOSE"):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("TF_CPP_MIN_VLOG_LEVEL", "0")


def import_tensorflow() -> ModuleType:
    """Import TensorFlow quietly, with Keras 2 selected. Use this, never a bare import."""
    quiet_tensorflow_env()
    from ._quiet import native_stderr_silenced

    with native_stderr_silenced():
        tf = require("tensorflow", purpose="training and export")
    if not os.environ.get("EDGECLF_VERBOSE"):
        tf.get_logger().setLevel("ERROR")
        try:
            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
        except ImportError:
            pass
    return tf


def import_keras() -> ModuleType:
    """The Keras 2 module (tf_keras) that every edgeclf model is built with."""
    import_tensorflow()
    return require("tf_keras", purpose="training and export")
