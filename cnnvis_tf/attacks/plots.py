"""Figures for attack results (matplotlib, Agg backend). Maths lives elsewhere.

Each function takes computed numbers, writes one PNG and returns its path.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_examples", "plot_curves", "plot_matrix"]


def _save(fig, path):
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _img(a, lo, hi):
    a = np.clip((np.asarray(a, np.float32) - lo) / ((hi - lo) or 1.0), 0.0, 1.0)
    return a[..., 0] if a.shape[-1] == 1 else a


def plot_examples(path, x, x_adv, y, pred_clean, pred_adv, class_names, *, n=8,
                  clip_min=0.0, clip_max=1.0, conf_clean=None, conf_adv=None):
    """Rows: clean image, adversarial image, perturbation (amplified to full range, as in
    seed 004 Fig. 2). ``conf_*``: softmax probability of each predicted label, if given."""
    n = max(1, min(n, len(x)))

    def conf(c, i):
        return "" if c is None else f" ({float(c[i]):.2f})"

    fig, axes = plt.subplots(3, n, figsize=(1.4 * n + 0.8, 4.6), squeeze=False)
    for i in range(n):
        delta = np.asarray(x_adv[i], np.float32) - x[i]
        scale = float(np.abs(delta).max()) or 1.0
        panels = [
            (_img(x[i], clip_min, clip_max),
             f"y={class_names[y[i]]} p={class_names[pred_clean[i]]}{conf(conf_clean, i)}"),
            (_img(x_adv[i], clip_min, clip_max),
             f"adv p={class_names[pred_adv[i]]}{conf(conf_adv, i)}"),
            (_img(0.5 + 0.5 * delta / scale, 0.0, 1.0), f"|d|max={scale:.3g}"),
        ]
        for row, (img, title) in enumerate(panels):
            ax = axes[row, i]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("clean / adversarial / perturbation", fontsize=9)
    return _save(fig, path)


def plot_curves(path, curves, *, xlabel, title="", reverse_x=False, errors=None):
    """Accuracy (%) against budget, one line per model.

    Args:
      curves: ``{model name: {budget: accuracy in [0, 1]}}`` (a "Clean" key is skipped).
      errors: optional ``{model name: {budget: std}}`` drawn as error bars.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, curve in curves.items():
        levels = [k for k in curve if k != "Clean"]
        yerr = None if errors is None else [100 * errors[name][k] for k in levels]
        ax.errorbar(levels, [100 * curve[k] for k in levels], yerr=yerr, marker="o",
                    capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    if reverse_x:
        ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_matrix(path, names, matrix, *, title="accuracy (%) of target on source's examples"):
    """Heat map of a transfer matrix (rows: source model, columns: target model)."""
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.1 * k + 2.5, 1.0 * k + 1.8))
    im = ax.imshow(100 * np.asarray(matrix), cmap="viridis", vmin=0, vmax=100)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{100 * matrix[i][j]:.1f}", ha="center", va="center",
                    color="w" if matrix[i][j] < 0.6 else "k", fontsize=8)
    ax.set_xticks(range(k), names, rotation=30, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("target (evaluated) model")
    ax.set_ylabel("source (attacked) model")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)
