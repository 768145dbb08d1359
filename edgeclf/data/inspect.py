"""What is in a dataset: counts per class, image sizes, unreadable files, a sample grid."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ImageError
from ..runtime import preprocess
from ..runtime.preprocess import load_image, open_image
from .folders import scan_folder


@dataclass(frozen=True)
class DatasetReport:
    """Counts per class (readable images), image sizes (w x h -> count), unreadable files."""

    root: str
    class_names: tuple[str, ...]
    counts: dict
    sizes: dict
    modes: dict
    bad: tuple[tuple[str, str], ...]
    ignored: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {"root": self.root, "class_names": list(self.class_names), "counts": dict(self.counts),
                "total": self.total, "sizes": dict(self.sizes), "modes": dict(self.modes),
                "bad": [list(b) for b in self.bad], "ignored": [list(i) for i in self.ignored]}


def inspect_folder(root) -> DatasetReport:
    """Open every image of ``root`` once (fully decoding it, so truncated files are caught);
    ``modes`` counts the stored colour modes of the readable images."""
    folder = scan_folder(root)
    counts = Counter()
    sizes = Counter()
    modes = Counter()
    bad = []
    for path, label in folder.files:
        try:
            # preprocess._open is open_image's own first step (same checks, same reasons); the
            # decoded image still has its stored mode, and open_image finishes from it.
            raw = preprocess._open(Path(path), None, None)
            try:
                mode = raw.mode
                img = open_image(raw)
            finally:
                raw.close()
        except ImageError as exc:
            bad.append((path, exc.reason))
            continue
        modes[mode] += 1
        counts[folder.class_names[label]] += 1
        sizes[f"{img.size[0]}x{img.size[1]}"] += 1
    full_counts = {name: counts.get(name, 0) for name in folder.class_names}
    return DatasetReport(str(folder.root), folder.class_names, full_counts, dict(sizes.most_common()),
                         dict(modes.most_common()), tuple(bad), folder.ignored)


def sample_grid(root, out_png, *, per_class: int = 4, size: int = 96, seed: int = 0):
    """Write a labelled grid of sample images, one row per class (as the tutorials plot)."""
    from .grid import image_grid

    folder = scan_folder(root)
    rng = np.random.default_rng(seed)
    images, titles = [], []
    for label, name in enumerate(folder.class_names):
        paths = [p for p, y in folder.files if y == label]
        picked = 0
        for i in rng.permutation(len(paths)):
            if picked == per_class:
                break
            try:
                images.append(load_image(paths[i], size))
            except ImageError:
                continue
            titles.append(name)
            picked += 1
        for _ in range(per_class - picked):
            images.append(None)
            titles.append("")
    return image_grid(images, titles, out_png, cols=per_class, title=f"{Path(folder.root).name}: samples")
