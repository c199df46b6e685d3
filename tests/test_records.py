"""Records never lie: run settings stored once and checked on rerun, validation split,
fingerprints of derived artefacts, numeric tables, atomic artefact formats."""

import csv
import os

import keras
import numpy as np
import pytest

from cnnvis_tf import datasets, rundir, testing, training
from cnnvis_tf.errors import InputError


def _data(n=120, val=24):
    x, y = testing.tiny_data(n + val + 60, seed=1)
    return datasets.Dataset("tiny", x[:n], y[:n], x[n + val:], y[n + val:], ["a", "b", "c"],
                            "synthetic", x_val=x[n:n + val], y_val=y[n:n + val])


def _train(run_dir, data, *, epochs=1, batch_size=16, settings=None, lr=1e-2, **kw):
    return training.train(run_dir, data, lambda: testing.tiny_cnn(seed=0), epochs=epochs,
                          batch_size=batch_size, learning_rate=lr,
                          settings=settings or {"model": "tiny"}, verbose=0, **kw)


def test_rerun_with_other_settings_is_refused(tmp_path):
    data = _data()
    run = str(tmp_path / "run")
    _train(run, data, epochs=1)
    cfg_before = rundir.read_json(os.path.join(run, rundir.CONFIG))
    for change in ({"batch_size": 32}, {"lr": 0.5}, {"settings": {"model": "other"}},
                   {"optimizer": "sgd"}):
        kw = dict(change)
        with pytest.raises(InputError) as err:
            _train(run, data, epochs=2, **kw)
        msg = str(err.value)
        assert "--overwrite" in msg and "--output_dir" in msg
        key = {"lr": "learning_rate", "settings": "model"}.get(next(iter(change)),
                                                                next(iter(change)))
        assert key in msg
    # Nothing was touched by the refused reruns.
    assert rundir.read_json(os.path.join(run, rundir.CONFIG)) == cfg_before
    assert len(rundir.read_history(run)["epoch"]) == 1


def test_other_architecture_is_refused(tmp_path):
    data = _data()
    run = str(tmp_path / "run")
    _train(run, data)
    with pytest.raises(InputError, match="architecture"):
        training.train(run, data, lambda: testing.tiny_cnn(filters=6), epochs=2, batch_size=16,
                       learning_rate=1e-2, settings={"model": "tiny"}, verbose=0)


def test_epochs_may_grow_and_steps_never_go_back(tmp_path):
    data = _data()
    run = str(tmp_path / "run")
    _train(run, data, epochs=1)
    _, metrics = _train(run, data, epochs=3)
    hist = rundir.read_history(run)
    assert list(hist["epoch"]) == [0, 1, 2] and metrics["epochs"] == 3
    assert np.all(np.diff(hist["step"]) > 0)
    steps = rundir.read_history(run, rundir.HISTORY_STEPS)["step"]
    assert np.all(np.diff(steps) > 0)
    with pytest.raises(InputError, match="epochs"):
        _train(run, data, epochs=2)


def test_overwrite_starts_afresh(tmp_path):
    data = _data()
    run = str(tmp_path / "run")
    _train(run, data, epochs=2)
    _, metrics = _train(run, data, epochs=1, batch_size=32, overwrite=True)
    cfg = rundir.read_json(os.path.join(run, rundir.CONFIG))
    assert cfg["settings"]["batch_size"] == 32 and metrics["epochs"] == 1
    assert list(rundir.read_history(run)["epoch"]) == [0]


def test_validation_split_is_not_test(tmp_path):
    data = _data()
    run = str(tmp_path / "run")
    model, metrics = _train(run, data, epochs=2)
    hist = rundir.read_history(run)
    logits = model.predict(data.x_val, verbose=0)
    val_acc = float(np.mean(logits.argmax(1) == data.y_val))
    assert hist["val_accuracy"][-1] == pytest.approx(val_acc, abs=1e-6)
    test_acc = float(np.mean(model.predict(data.x_test, verbose=0).argmax(1) == data.y_test))
    assert metrics["test/accuracy"] == pytest.approx(test_acc, abs=1e-6)
    assert metrics["validation/accuracy"] == pytest.approx(val_acc, abs=1e-6)


def test_load_validation_split_is_stratified_and_seeded():
    a = datasets.load("mnist", embedded=True, seed=0, validation_split=0.1)
    b = datasets.load("mnist", embedded=True, seed=0, validation_split=0.1)
    assert len(a.x_val) == 400 and len(a.x_train) == 3600
    np.testing.assert_array_equal(a.y_val, b.y_val)
    assert np.bincount(a.y_val).tolist() == [40] * 10
    assert a.facts()["validation_examples"] == 400
    none = datasets.load("mnist", embedded=True, seed=0, validation_split=0)
    assert none.x_val is None and len(none.x_train) == 4000
    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(InputError, match="validation_split"):
            datasets.load("mnist", embedded=True, validation_split=bad)


def test_deterministic_resume_equals_uninterrupted(tmp_path):
    data = _data()
    training.set_seed(3)
    _, straight = _train(str(tmp_path / "a"), data, epochs=2, seed=3)
    training.set_seed(3)
    _train(str(tmp_path / "b"), data, epochs=1, seed=3)
    training.set_seed(3)
    _, resumed = _train(str(tmp_path / "b"), data, epochs=2, seed=3)
    assert resumed["model_fingerprint"] == straight["model_fingerprint"]


def test_fingerprint_survives_save_and_load(tmp_path):
    model = testing.tiny_cnn(seed=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert rundir.model_fingerprint(keras.models.load_model(path)) == \
        rundir.model_fingerprint(model)
    other = testing.tiny_cnn(seed=1)
    assert rundir.model_fingerprint(other) != rundir.model_fingerprint(model)


def test_artifact_is_current_follows_fingerprints(tmp_path):
    out = str(tmp_path / "art")
    os.makedirs(out)
    rec = rundir.script_record("experiments.attack", {"eps": 0.1}, {"run": "abc"})
    rec["argv"] = ["--eps=0.1"]
    rundir.write_record(out, rec)
    assert not rundir.artifact_is_current(out, "metrics.json", ["--eps=0.1"], ["abc"])
    rundir.write_json(os.path.join(out, "metrics.json"), {})
    assert rundir.artifact_is_current(out, "metrics.json", ["--eps=0.1"], ["abc"])
    assert not rundir.artifact_is_current(out, "metrics.json", ["--eps=0.1"], ["retrained"])
    assert not rundir.artifact_is_current(out, "metrics.json", ["--eps=0.2"], ["abc"])


def test_write_table_numeric_csv_sample_std(tmp_path):
    stats = rundir.write_table(
        str(tmp_path), row_label="Model", columns=["Clean", "33"],
        rows={"a": {"Clean": [97.0, 98.0, 99.0], "33": [90.0, 91.0, 95.0]},
              "b": {"Clean": [50.0, 50.0, 50.0], "33": [10.0, 20.0, 30.0]}},
        title="Accuracy (%)", unit="%")
    with open(tmp_path / "table.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Model", "Clean (%)", "Clean std (%)", "33 (%)", "33 std (%)"]
    values = [float(v) for v in rows[1][1:]]
    assert values == pytest.approx([98.0, 1.0, 92.0, np.std([90, 91, 95], ddof=1)])
    assert stats["b"]["33"]["std"] == pytest.approx(10.0)
    md = (tmp_path / "table.md").read_text()
    assert "98.00 ± 1.00" in md and "ddof=1" in md and "%" not in rows[1][1]


def test_write_table_single_values_have_no_std(tmp_path):
    rundir.write_table(str(tmp_path), row_label="Model", columns=["Clean"],
                       rows={"a": {"Clean": 97.5}}, title="t", unit="%")
    with open(tmp_path / "table.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["Model", "Clean (%)"], ["a", "97.5"]]


def test_adversarial_npz_roundtrip_and_errors(tmp_path):
    x = np.random.default_rng(0).uniform(size=(3, 4, 4, 1)).astype(np.float32)
    path = rundir.write_adversarial(str(tmp_path), x=x, x_adv=x, y=np.array([[0], [1], [2]]),
                                    pred_clean=np.arange(3), pred_adv=np.arange(3))
    data = rundir.read_adversarial(path)
    assert data["y"].tolist() == [0, 1, 2] and data["x"].dtype == np.float32
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(open(path, "rb").read()[:50])
    with pytest.raises(InputError, match="corrupt or truncated"):
        rundir.read_adversarial(str(trunc))
    np.savez(tmp_path / "obj.npz", x=np.array([object()]), x_adv=x, y=np.arange(3))
    with pytest.raises(InputError, match="Python objects"):
        rundir.read_adversarial(str(tmp_path / "obj.npz"))
    np.savez(tmp_path / "missing.npz", x=x)
    with pytest.raises(InputError, match="x_adv"):
        rundir.read_adversarial(str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "shape.npz", x=x, x_adv=x[:2], y=np.arange(3))
    with pytest.raises(InputError, match="same shape"):
        rundir.read_adversarial(str(tmp_path / "shape.npz"))
    with pytest.raises(InputError, match="does not exist"):
        rundir.read_adversarial(str(tmp_path / "nope.npz"))


def test_attack_records_effective_parameters(mnist_run, tmp_path):
    """`attack --attack=pgd` without --eps records the budget, steps, step size and seed it
    used, and the model fingerprint."""
    from conftest import run_script

    out = str(tmp_path / "pgd")
    run_script("experiments.attack", f"--model_dir={mnist_run['dir']}", "--attack=pgd",
               "--num_examples=8", f"--output_dir={out}")
    cfg = rundir.read_json(os.path.join(out, rundir.CONFIG))
    kw = cfg["params"]["attack_kwargs"]
    assert kw["eps"] == 0.1 and kw["nb_iter"] == 40 and kw["rand_init"] is True
    assert kw["eps_iter"] == pytest.approx(min(0.1, 2.5 * 0.1 / 40)) and kw["seed"] == 0
    assert cfg["attack_kwargs"] == kw and cfg["script"] == "experiments.attack"
    fp = rundir.read_json(os.path.join(mnist_run["dir"], rundir.METRICS))["model_fingerprint"]
    assert cfg["models"] == {mnist_run["dir"]: fp}
    x = rundir.read_adversarial(os.path.join(out, rundir.ADVERSARIAL))
    assert np.abs(x["x_adv"] - x["x"]).max() <= 0.1 + 1e-6


def test_visualize_writes_its_record(mnist_run, tmp_path):
    from conftest import run_script

    out = str(tmp_path / "vis")
    run_script("experiments.visualize", f"--model_dir={mnist_run['dir']}",
               "--methods=saliency", f"--output_dir={out}")
    cfg = rundir.read_json(os.path.join(out, rundir.CONFIG))
    assert cfg["params"]["methods"] == ["saliency"] and cfg["params"]["seed"] == 0
    assert list(cfg["models"]) == [mnist_run["dir"]] and "saliency" in cfg["seconds"]


def test_settings_added_later_at_their_default_still_resume():
    old = {"model": "m", "epochs": 2}
    assert training.settings_differences(old, {**old, "lr_decay": 0.0}) == []
    assert training.settings_differences(old, {**old, "mode": "l2"},
                                         defaults={"mode": "l2"}) == []
    assert training.settings_differences(old, {**old, "mode": "decoupled"},
                                         defaults={"mode": "l2"}) == [("mode", None,
                                                                       "decoupled")]
    assert training.settings_differences(old, {**old, "epochs": 5}) == []
    assert training.settings_differences(old, {**old, "epochs": 1}) == [("epochs", 2, 1)]
    assert training.settings_differences({"data": {"n": 1}}, {"data": {"n": 2}}) == [
        ("data.n", 1, 2)]


def test_resume_keeps_the_commit_that_trained(tmp_path, monkeypatch):
    data = _data()
    run = str(tmp_path / "run")
    monkeypatch.setattr(rundir, "git_commit", lambda: "aaaa")
    _train(run, data, epochs=1)
    monkeypatch.setattr(rundir, "git_commit", lambda: "bbbb")
    before = open(os.path.join(run, rundir.CONFIG)).read()
    _train(run, data, epochs=1)  # nothing to train: the record must not change at all
    assert open(os.path.join(run, rundir.CONFIG)).read() == before
    cfg = rundir.read_json(os.path.join(run, rundir.CONFIG))
    assert cfg["git_commit"] == "aaaa" and "resumes" not in cfg
    _train(run, data, epochs=2)
    cfg = rundir.read_json(os.path.join(run, rundir.CONFIG))
    assert cfg["git_commit"] == "aaaa"
    assert [(r["git_commit"], r["from_epoch"], r["to_epoch"]) for r in cfg["resumes"]] == [
        ("bbbb", 1, 2)]


def test_written_files_get_the_usual_mode(tmp_path):
    path = str(tmp_path / "a.json")
    rundir.write_json(path, {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
