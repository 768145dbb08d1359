"""Pictures of images: a captioned grid (matplotlib, Agg backend; written atomically).
Used by ``data inspect --grid`` and by training's mistakes plot."""

from __future__ import annotations

from pathlib import Path

from .._io import atomic_path
from .._optional import require


def pyplot():
    mpl = require("matplotlib", purpose="plotting")
    mpl.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    plt = pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def image_grid(images, titles, path, *, cols: int = 4, title: str | None = None, colors=None) -> Path:
    """Images (uint8 HxWx3, or None for a blank cell) with a caption each."""
    plt = pyplot()
    n = max(len(images), 1)
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.5 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images) and images[k] is not None:
            ax.imshow(images[k])
            ax.set_title(titles[k], fontsize=8, color=(colors[k] if colors else "black"))
    if not images:
        axes.flat[0].text(0.5, 0.5, "nothing to show", ha="center", va="center")
    if title:
        fig.suptitle(title)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.5 * rows)))
    else:
        fig.tight_layout()
    return save_figure(fig, path)
