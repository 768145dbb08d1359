"""Feed cached uint8 images to Keras through ``tf.data``: shuffle, batch, prefetch.

Batches are gathered from the (possibly memory-mapped) uint8 array by index, so memory use
stays at one batch per prefetch slot however large the dataset is; the cast to float32
happens inside TensorFlow. Pixel values stay 0..255; models normalise inside.
"""

from __future__ import annotations

import numpy as np

from .._optional import import_tensorflow


def make_dataset(pixels: np.ndarray, labels, *, batch_size: int = 32, shuffle: bool = False, seed: int = 123,
                 rows=None, binary: bool = False, in_memory_bytes: int = 2 << 30, shard_by_data: bool = False):
    """A ``tf.data.Dataset`` of ``(float32 images (B,H,W,3) 0..255, labels)`` batches.

    Args:
        pixels: uint8 array (N, H, W, 3), e.g. ``DecodedImages.pixels``.
        labels: label index per selected row.
        batch_size: images per batch (the last batch may be smaller).
        shuffle: reshuffle every epoch, seeded (the same order for the same seed).
        seed: shuffle seed.
        rows: which rows of ``pixels`` to use, in label order (default: all).
        binary: labels as float32 (N, 1) for a one-unit sigmoid model, else int32 (N,).
        in_memory_bytes: up to this size the selected images are copied into one tensor and
            batches are gathered inside TensorFlow; above it, batches are read from ``pixels``
            (a memory map) by index, one batch at a time.
        shard_by_data: for multi-worker training: every worker builds the same (seeded)
            pipeline and takes its part of each global batch (there are no files to shard by).
    """
    tf = import_tensorflow()
    rows = np.arange(len(pixels), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    labels = np.asarray(labels)
    if len(labels) != len(rows):
        raise ValueError(f"{len(labels)} labels for {len(rows)} images")
    h, w = pixels.shape[1:3]
    ys = labels.astype(np.float32).reshape(-1, 1) if binary else labels.astype(np.int32)

    ds = tf.data.Dataset.range(len(rows))
    if shuffle:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    if len(rows) * h * w * 3 <= in_memory_bytes:
        # Fits in memory: one uint8 tensor (a one-time copy), batches gathered inside TensorFlow.
        px = tf.constant(np.ascontiguousarray(pixels[rows]))
        ys_t = tf.constant(ys)

        def load(positions):
            return tf.cast(tf.gather(px, positions), tf.float32), tf.gather(ys_t, positions)

    else:
        def gather(positions):
            positions = np.sort(positions)  # sorted reads are kinder to a memory map
            return np.asarray(pixels[rows[positions]]), ys[positions]

        out_types = (tf.uint8, tf.float32 if binary else tf.int32)

        def load(positions):
            x, y = tf.numpy_function(gather, [positions], out_types)
            x.set_shape([None, h, w, 3])
            y.set_shape([None, 1] if binary else [None])
            return tf.cast(x, tf.float32), y

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if shard_by_data:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)

