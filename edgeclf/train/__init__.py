"""edgeclf.train: the model zoo, the trainer and its plots.

``train_model`` and ``build_model`` import TensorFlow only when called.
"""

from .trainer import TrainConfig, TrainResult, train_model
from .zoo import MODELS, BuiltModel, build_model

__all__ = ["MODELS", "BuiltModel", "TrainConfig", "TrainResult", "build_model", "train_model"]
