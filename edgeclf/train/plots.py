"""The training plots: curves.png, confusion.png, mistakes.png.

matplotlib with the Agg backend (no display needed), every file written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.grid import image_grid, pyplot, save_figure


def plot_curves(history: dict, path) -> Path:
    """Training vs validation accuracy and loss per epoch, side by side (as the tutorials plot)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, len(history.get("loss", [])) + 1)
    for ax, key, title in ((axes[0], "accuracy", "Accuracy"), (axes[1], "loss", "Loss")):
        if key in history:
            ax.plot(epochs, history[key], "o-", label=f"Training {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s-", label=f"Validation {key}")
        ax.set_title(f"Training and validation {title.lower()}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if key == "accuracy" else "upper right")
    if "accuracy" in history:
        axes[0].set_ylim(0, 1.02)
    marks = history.get("fine_tune_start")
    if marks:
        for ax in axes:
            ax.axvline(marks + 0.5, color="grey", ls="--", lw=1)
            ax.text(marks + 0.6, ax.get_ylim()[1], "fine-tune", va="top", fontsize=8, color="grey")
    return save_figure(fig, path)


def plot_confusion(matrix, class_names, path, *, title="Confusion matrix (validation)") -> Path:
    """Rows are true classes, columns predicted; each cell shows its count."""
    plt = pyplot()
    m = np.asarray(matrix)
    n = len(class_names)
    side = max(4.0, 0.6 * n + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(m, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    hi = m.max() if m.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(m[i, j])), ha="center", va="center",
                    color="white" if hi and m[i, j] > hi / 2 else "black", fontsize=9)
    ax.set_title(title)
    return save_figure(fig, path)


def plot_mistakes(images, true_idx, pred_idx, confidences, class_names, path, *, limit: int = 16,
                  total: int | None = None) -> Path:
    """Misclassified validation images captioned with predicted and true label."""
    shown = list(range(min(limit, len(images))))
    titles = [f"pred: {class_names[pred_idx[i]]} ({confidences[i]:.0%})\ntrue: {class_names[true_idx[i]]}"
              for i in shown]
    if not shown:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "No misclassified validation images", ha="center", va="center")
        return save_figure(fig, path)
    total = len(images) if total is None else total
    head = f"Misclassified validation images ({len(shown)} of {total})"
    return image_grid([images[i] for i in shown], titles, path, cols=4, title=head,
                      colors=["red"] * len(shown))
