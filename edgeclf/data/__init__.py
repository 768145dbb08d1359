"""edgeclf.data: class folders, seeded splits, the decoded-image cache, tf.data, the synthetic set.

Nothing here imports TensorFlow at import time (only ``make_dataset`` does, when called).
"""

from .cache import DecodedImages, decode_images
from .folders import ImageFolder, scan_folder
from .splits import Split, split_folder
from .synth import generate as generate_synthetic

__all__ = ["DecodedImages", "ImageFolder", "Split", "decode_images", "generate_synthetic", "scan_folder",
           "split_folder"]
