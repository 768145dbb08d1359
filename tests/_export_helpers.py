"""Tiny models, images and run directories for the export tests (no edgeclf.train)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SIZE = 32
LABELS = ("red", "green", "blue")


def make_images(root: Path, per_class: int = 20, labels=LABELS, seed: int = 0) -> list:
    """Class folders of PNGs: each class is noise around one dominant colour channel."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    samples = []
    for k, name in enumerate(labels):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 90, (SIZE, SIZE, 3))
            img[..., k % 3] += 120 + rng.integers(0, 45)
            if k >= 3:  # more classes than channels: add stripes
                img[::2] = 255 - img[::2]
            p = d / f"img_{i:03d}.png"
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(p)
            samples.append((str(p), k))
    return samples


def tiny_cnn(keras, num_classes=3, *, head="logits", augment=False):
    inp = keras.Input((SIZE, SIZE, 3), name="pixels")
    x = inp
    if augment:
        x = keras.layers.RandomFlip("horizontal")(x)
    x = keras.layers.Rescaling(1 / 255.0)(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    if head == "sigmoid":
        out = keras.layers.Dense(1, activation="sigmoid")(x)
    elif head == "softmax":
        out = keras.layers.Dense(num_classes, activation="softmax")(x)
    else:
        out = keras.layers.Dense(num_classes)(x)
    return keras.Model(inp, out)


def fit(keras, model, samples, *, head="logits", epochs=3):
    from edgeclf.runtime.preprocess import load_batch

    x = load_batch([p for p, _ in samples], SIZE).astype(np.float32)
    y = np.array([i for _, i in samples])
    if head == "sigmoid":
        loss = keras.losses.BinaryCrossentropy()
        y = y.reshape(-1, 1).astype(np.float32)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=head == "logits")
    model.compile(keras.optimizers.Adam(3e-3), loss)
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, shuffle=True)
    return model


def write_config(run: Path, labels=LABELS, *, output_kind="logits", seed=123):
    """spec.json (what the model takes and gives) and config.json (how it was trained), as training writes them."""
    from edgeclf.runtime.spec import ModelSpec

    spec = ModelSpec(labels=tuple(labels), input_size=(SIZE, SIZE), output_kind=output_kind, model_name="tiny_cnn")
    (run / "spec.json").write_text(json.dumps(spec.to_dict()))
    (run / "config.json").write_text(json.dumps({"model": "tiny_cnn", "seed": seed}))


def write_split(run: Path, data_root: Path, labels=LABELS, *, seed=123, val_split=0.2, test_split=0.0) -> dict:
    """split.json as ``edgeclf train`` writes it (the data package's own split), with the
    indices of ``labels`` (the class folders sort differently from LABELS)."""
    from edgeclf.data.folders import scan_folder
    from edgeclf.data.splits import split_folder

    made = split_folder(scan_folder(data_root), val_split=val_split, test_split=test_split, seed=seed)
    split = made.to_dict()
    to_label = [list(labels).index(name) for name in made.class_names]
    for part in ("train", "val", "test"):
        split[part] = [[p, to_label[y]] for p, y in split[part]]
    (run / "split.json").write_text(json.dumps(split))
    return split


def write_run_dir(run: Path, model, samples, labels=LABELS, *, output_kind="logits", seed=123):
    """A run directory as docs/contracts.md describes it (``samples`` come from make_images)."""
    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "model.keras")
    (run / "labels.txt").write_text("\n".join(labels) + "\n")
    write_config(run, labels, output_kind=output_kind, seed=seed)
    write_split(run, Path(samples[0][0]).parent.parent, labels, seed=seed)
    return run


def copy_run(run: Path, dest: Path, *, seed=123, val_split=0.2, test_split=0.0) -> dict:
    """A copy of ``run`` (same model) with another seed and split; returns the split."""
    import shutil

    dest.mkdir(parents=True)
    for name in ("model.keras", "labels.txt", "spec.json"):
        shutil.copy(run / name, dest / name)
    write_config(dest, seed=seed)
    root = Path(json.loads((run / "split.json").read_text())["root"])
    return write_split(dest, root, seed=seed, val_split=val_split, test_split=test_split)
