"""Training curves of a run directory: loss and accuracy against iterations.

Reproduces the views of Sahoo 2019 (EE6132 A2) Fig. 1/3 (training and validation loss vs
iterations) and Fig. 4 (accuracy vs iterations, several runs overlaid, e.g. with and
without batch norm). Drawing is done by :mod:`cnnvis_tf.vis.plotting`.
"""

import os
from collections.abc import Sequence

from cnnvis_tf import rundir
from cnnvis_tf.vis import plotting

__all__ = ["plot_training_curves", "plot_runs_accuracy"]


def _histories(run_dir):
    epochs = rundir.read_history(run_dir)
    steps_path = os.path.join(run_dir, rundir.HISTORY_STEPS)
    steps = rundir.read_history(run_dir, rundir.HISTORY_STEPS) if os.path.exists(steps_path) \
        else None
    return epochs, steps


def plot_training_curves(run_dir: str, out_dir: str | None = None) -> list[str]:
    """Writes ``loss.png`` and ``accuracy.png`` into ``figures/`` of ``run_dir``.

    Returns:
      The list of written paths.
    """
    out_dir = out_dir or os.path.join(run_dir, rundir.FIGURES)
    os.makedirs(out_dir, exist_ok=True)
    epochs, steps = _histories(run_dir)
    name = os.path.basename(os.path.normpath(run_dir))
    paths = []
    for key in ("loss", "accuracy"):
        lines = []
        if steps is not None and len(steps.get("step", [])):
            lines.append((f"train {key} (running mean in epoch)", steps["step"], steps[key], "-",
                          {"lw": 0.8, "alpha": 0.6}))
        lines.append((f"train {key} (epoch mean)", epochs["step"], epochs[key], "o-", {}))
        if f"val_{key}" in epochs:
            lines.append((f"validation {key}", epochs["step"], epochs[f"val_{key}"], "s-", {}))
        fig = plotting.series(lines, "iteration", key, f"{name}: {key} vs iterations")
        paths.append(plotting.save(fig, os.path.join(out_dir, f"{key}.png")))
    return paths


def plot_runs_accuracy(run_dirs: Sequence[str], labels: Sequence[str], path: str,
                       key: str = "val_accuracy") -> str:
    """Overlays one metric of several runs against iterations (Fig. 4 style)."""
    lines = []
    for run_dir, label in zip(run_dirs, labels):
        epochs, _ = _histories(run_dir)
        lines.append((label, epochs["step"], epochs[key], "o-", {}))
    name = key.replace("val_", "validation ")
    return plotting.save(plotting.series(lines, "iteration", name, f"{name} vs iterations"), path)
