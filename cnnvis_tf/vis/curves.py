"""Training curves of a run directory: loss and accuracy against iterations.

Reproduces the views of Sahoo 2019 (EE6132 A2) Fig. 1/3 (training and test loss vs
iterations) and Fig. 4 (accuracy vs iterations, several runs overlaid, e.g. with and
without batch norm).
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cnnvis_tf import rundir  # noqa: E402

__all__ = ["plot_training_curves", "plot_runs_accuracy"]


def _histories(run_dir):
    from cnnvis_tf.training import read_history

    epochs = read_history(run_dir)
    steps_path = os.path.join(run_dir, "history_steps.csv")
    steps = read_history(run_dir, "history_steps.csv") if os.path.exists(steps_path) else None
    return epochs, steps


def _panel(ax, epochs, steps, key, label):
    if steps is not None and len(steps.get("step", [])):
        ax.plot(steps["step"], steps[key], lw=0.8, alpha=0.6, label=f"train {label} (running mean in epoch)")
    ax.plot(epochs["step"], epochs[key], "o-", label=f"train {label} (epoch mean)")
    if f"val_{key}" in epochs:
        ax.plot(epochs["step"], epochs[f"val_{key}"], "s-", label=f"test {label}")
    ax.set_xlabel("iteration")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend()


def plot_training_curves(run_dir, out_dir=None):
    """Writes ``loss.png`` and ``accuracy.png`` into ``figures/`` of ``run_dir``.

    Returns:
      The list of written paths.
    """
    out_dir = out_dir or os.path.join(run_dir, rundir.FIGURES)
    os.makedirs(out_dir, exist_ok=True)
    epochs, steps = _histories(run_dir)
    name = os.path.basename(os.path.normpath(run_dir))
    paths = []
    for key, label in (("loss", "loss"), ("accuracy", "accuracy")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        _panel(ax, epochs, steps, key, label)
        ax.set_title(f"{name}: {label} vs iterations")
        path = os.path.join(out_dir, f"{key}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_runs_accuracy(run_dirs, labels, path, key="val_accuracy"):
    """Overlays one metric of several runs against iterations (Fig. 4 style)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for run_dir, label in zip(run_dirs, labels):
        epochs, _ = _histories(run_dir)
        ax.plot(epochs["step"], epochs[key], "o-", label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel(key.replace("val_", "test "))
    ax.set_title(f"{key.replace('val_', 'test ')} vs iterations")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
