"""Smoke tests of ``python -m experiments.visualize`` on a real run directory."""

import json
import os

import numpy as np
import pytest

from conftest import run_script

FAST = "filters,activations,occlusion,saliency,gradcam,guided_backprop,pca,loss_1d"


@pytest.fixture(scope="module")
def vis_dir(mnist_run, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("vis"))
    run_script("experiments.visualize", f"--model_dir={mnist_run['dir']}", f"--methods={FAST}",
               "--image_index=3", "--num_examples=100", "--steps=5", f"--output_dir={out}")
    return out


def test_writes_png_and_numbers_per_method(vis_dir):
    for name in FAST.split(","):
        assert os.path.getsize(os.path.join(vis_dir, f"{name}.png")) > 5000
        assert any(os.path.exists(os.path.join(vis_dir, f"{name}.{ext}"))
                   for ext in ("npz", "json"))


def test_occlusion_on_mnist_has_nine_positions(vis_dir):
    with open(os.path.join(vis_dir, "occlusion.json")) as f:
        facts = json.load(f)
    assert len(facts["table"]) == 9  # 28x28, 14x14 patch, stride 7 (seed 001)
    with np.load(os.path.join(vis_dir, "occlusion.npz")) as data:
        assert data["heatmap"].shape == (3, 3)


def test_loss_1d_ends_at_trained_model(vis_dir, mnist_run):
    with np.load(os.path.join(vis_dir, "loss_1d.npz")) as data:
        alpha, loss = data["alpha"], data["loss"]
    i0, i1 = int(np.argmin(np.abs(alpha))), int(np.argmin(np.abs(alpha - 1)))
    assert loss[i1] < loss[i0]  # trained weights beat the initial ones


def test_unknown_method_exits_with_one_line(mnist_run, tmp_path):
    proc = run_script("experiments.visualize", f"--model_dir={mnist_run['dir']}",
                      "--methods=saliency,nope", f"--output_dir={tmp_path}", check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "nope" in last and "gradcam" in last


def test_unknown_layer_exits_with_one_line(mnist_run, tmp_path):
    proc = run_script("experiments.visualize", f"--model_dir={mnist_run['dir']}",
                      "--methods=gradcam", "--layer=conv7", f"--output_dir={tmp_path}",
                      check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "conv7" in last and "conv2" in last
