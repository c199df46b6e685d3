"""adversarial_diff's seed-004 options: perturbation groups by source, target or both
(``--grouping``) and the deconvnet projection layer (``--layer``, default conv2)."""

import json
import os

import numpy as np
import pytest

from cnnvis_tf import attacks, datasets, evaluation, rundir
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import adversarial, methods
from cnnvis_tf.vis.guided import Deconvnet
from conftest import run_script


@pytest.fixture(scope="module")
def pairs(mnist_run, tmp_path_factory):
    """FGSM pairs of 60 test images of the fixture run, as experiments.attack writes them."""
    run = rundir.load_run(mnist_run["dir"])
    data = datasets.load_for_run(run.config)
    x, y = data.x_test[:60], data.y_test[:60].astype(np.int64)
    x_adv = attacks.fgsm(run.model, x, 0.25, y=y)
    out = str(tmp_path_factory.mktemp("pairs"))
    rundir.write_adversarial(out, x=x, x_adv=x_adv, y=y,
                             pred_clean=evaluation.predict_labels(run.model, x),
                             pred_adv=evaluation.predict_labels(run.model, x_adv))
    return run, os.path.join(out, "adversarial.npz")


def _run(run, path, out, **kwargs):
    ctx = methods.Context(model=run.model, x=np.zeros((1, 28, 28, 1), np.float32),
                          y=np.zeros(1, np.int64), adversarial=path, **kwargs)
    methods.run("adversarial_diff", ctx, str(out))
    return (json.load(open(os.path.join(out, "adversarial_diff.json"))),
            np.load(os.path.join(out, "adversarial_diff.npz")))


@pytest.mark.parametrize("grouping,seed_name,key", [
    ("source", "orig", lambda y, a: f"{y}->"),
    ("target", "adv", lambda y, a: f"->{a}"),
    ("both", "both", lambda y, a: f"{y}->{a}"),
])
def test_groups_follow_the_requested_grouping(pairs, tmp_path, grouping, seed_name, key):
    run, path = pairs
    facts, _ = _run(run, path, tmp_path, grouping=grouping)
    assert facts["grouping"] == seed_name
    p = rundir.read_adversarial(path)
    fooled = np.flatnonzero(p["pred_adv"] != p["y"])
    assert len(fooled) >= 5
    expected = {}
    for i in fooled:
        expected.setdefault(key(int(p["y"][i]), int(p["pred_adv"][i])), []).append(int(i))
    assert facts["groups"] == expected


def test_projection_comes_from_the_named_layer(pairs, tmp_path):
    run, path = pairs
    facts, arrays = _run(run, path, tmp_path, grouping="source", layer="conv1")
    assert facts["project_layer"] == "conv1_relu"  # the rectified maps of conv1
    p = rundir.read_adversarial(path)
    key = max(facts["groups"], key=lambda k: len(facts["groups"][k]))
    idx = np.asarray(facts["groups"][key])
    deconv = Deconvnet(run.model)
    clean = deconv.project(p["x"][idx], "conv1_relu").mean(axis=0)
    adv = deconv.project(p["x_adv"][idx], "conv1_relu").mean(axis=0)
    np.testing.assert_allclose(arrays[f"projection/{key}"][0], clean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(arrays[f"projection/{key}"][2], adv - clean, rtol=1e-4,
                               atol=1e-6)
    other = Deconvnet(run.model).project(p["x"][idx], "conv2_relu").mean(axis=0)
    assert not np.allclose(arrays[f"projection/{key}"][0], other, atol=1e-6)
    # Seed 004's default: conv2.
    assert adversarial.default_project_layer(run.model) == "conv2_relu"


def test_unknown_layer_or_grouping_is_a_clear_error(pairs, tmp_path):
    run, path = pairs
    with pytest.raises(InputError, match=r"Unknown layer 'conv9'.*conv1.*conv2"):
        _run(run, path, tmp_path, layer="conv9")
    with pytest.raises(InputError, match=r"Unknown layer 'conv9'.*conv1"):
        adversarial.analyze(run.model, adversarial.load_pairs(path), project_layer="conv9")
    with pytest.raises(InputError, match="grouping"):
        adversarial.analyze(run.model, adversarial.load_pairs(path), by="class")


def test_visualize_script_passes_grouping_and_layer(mnist_run, pairs, tmp_path):
    _, path = pairs
    out = str(tmp_path / "vis")
    run_script("experiments.visualize", f"--model_dir={mnist_run['dir']}",
               "--methods=adversarial_diff", f"--adversarial={path}", "--grouping=target",
               "--layer=conv1", f"--output_dir={out}")
    facts = json.load(open(os.path.join(out, "adversarial_diff.json")))
    assert facts["grouping"] == "adv" and facts["project_layer"] == "conv1_relu"
    assert facts["groups"] and all(k.startswith("->") for k in facts["groups"])
    config = json.load(open(os.path.join(out, rundir.CONFIG)))
    assert config["params"]["grouping"] == "target" and config["params"]["layer"] == "conv1"
