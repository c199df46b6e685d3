"""Shared fixtures. ``mnist_run`` is a real run directory written by experiments.train."""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(module, *args, check=True, timeout=600):
    """Runs ``python -m <module> args`` from the repo root; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0")
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{module} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory):
    """A small but real run: conv2_fc500 on 1,000 embedded MNIST images, 1 epoch."""
    out = str(tmp_path_factory.mktemp("runs") / "mnist")
    proc = run_script(
        "experiments.train", "--dataset=mnist", "--embedded", "--model=conv2_fc500",
        "--epochs=1", "--train_size=1000", "--batch_size=32", f"--output_dir={out}",
    )
    return {"dir": out, "stdout": proc.stdout, "stderr": proc.stderr}
