"""Training loop: schedules, beating chance, resume after interruption."""

import csv
import os

import keras
import numpy as np
import pytest

from cnnvis_tf import datasets, models, rundir, training
from cnnvis_tf.errors import InputError


class _Interrupt(Exception):
    pass


class _StopAfter(keras.callbacks.Callback):
    """Simulates a crash at the end of a given epoch (after the checkpoint was written)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise _Interrupt()


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_parse_lr_schedule_and_optimizer():
    assert training.parse_lr_schedule("10:1e-4,20:1e-5") == [(10, 1e-4), (20, 1e-5)]
    assert training.parse_lr_schedule("") == []
    for bad in ("10-1e-4", "20:1e-4,10:1e-5", "5:-1", "0:1e-3"):
        with pytest.raises(InputError, match="lr_schedule"):
            training.parse_lr_schedule(bad)
    opt = training.make_optimizer("sgd", 0.1, lr_schedule="2:0.01,4:0.001", steps_per_epoch=10)
    sched = opt.learning_rate if callable(opt.learning_rate) else opt._learning_rate
    assert np.isclose(float(sched(0)), 0.1) and np.isclose(float(sched(25)), 0.01)
    assert np.isclose(float(sched(45)), 0.001)
    assert isinstance(training.make_optimizer("adam", 1e-3), keras.optimizers.Adam)
    with pytest.raises(InputError, match="Unknown optimizer"):
        training.make_optimizer("rmsprop", 1e-3)
    with pytest.raises(InputError, match="learning_rate"):
        training.make_optimizer("adam", 0.0)
    with pytest.raises(InputError, match="Unknown strategy"):
        training.get_strategy("horovod")


@pytest.fixture(scope="module")
def small_mnist():
    return datasets.load("mnist", embedded=True, seed=0, train_size=640)


def _build(data):
    return lambda: models.conv2_fc500(
        data.input_shape, data.num_classes, fc_units=64, mean=data.mean, std=data.std
    )


def test_short_training_beats_chance(tmp_path, small_mnist):
    training.set_seed(0)
    model, metrics = training.train(
        str(tmp_path), small_mnist, _build(small_mnist), epochs=2, batch_size=32, verbose=0
    )
    assert metrics["test/accuracy"] > 0.75  # chance is 0.10
    for f in (rundir.MODEL, rundir.CONFIG, rundir.METRICS, rundir.HISTORY,
              rundir.INITIAL_WEIGHTS):
        assert os.path.exists(tmp_path / f), f
    cfg = rundir.read_json(tmp_path / rundir.CONFIG)
    assert cfg["clip_min"] == 0.0 and cfg["clip_max"] == 1.0 and cfg["input_shape"] == [28, 28, 1]
    assert cfg["data_source"] == "embedded" and len(cfg["class_names"]) == 10
    assert metrics["epochs"] == 2 and metrics["params"] == model.count_params()
    # The initial weights differ from the trained ones and load into a fresh model.
    init = _build(small_mnist)()
    init.load_weights(str(tmp_path / rundir.INITIAL_WEIGHTS))
    assert not np.allclose(init.get_layer("fc1").kernel, model.get_layer("fc1").kernel)


def test_resume_after_interruption_loses_nothing(tmp_path, small_mnist):
    run = str(tmp_path / "run")
    training.set_seed(1)
    with pytest.raises(_Interrupt):
        training.train(run, small_mnist, _build(small_mnist), epochs=3, batch_size=64,
                       callbacks=[_StopAfter(1)], verbose=0)
    before = _rows(os.path.join(run, rundir.HISTORY))
    assert [r["epoch"] for r in before] == ["0", "1"]
    assert not os.path.exists(os.path.join(run, rundir.METRICS))
    state = rundir.read_json(os.path.join(run, rundir.CHECKPOINTS, "state.json"))
    assert state["epochs_done"] == 2 and state["checkpoint"] == "epoch-0002.keras"
    ckpt = keras.models.load_model(os.path.join(run, rundir.CHECKPOINTS, state["checkpoint"]))
    # A half-written epoch row (crash between history and checkpoint) must be dropped.
    with open(os.path.join(run, rundir.HISTORY), "a") as f:
        f.write("2,30,9,9,9,9,9\n")
    model, metrics = training.train(run, small_mnist, _build(small_mnist), epochs=3,
                                    batch_size=64, verbose=0)
    after = _rows(os.path.join(run, rundir.HISTORY))
    assert [r["epoch"] for r in after] == ["0", "1", "2"]
    assert after[:2] == before  # nothing rewritten
    assert metrics["epochs"] == 3
    # Training went on from the checkpoint's optimizer state (Adam's step counter).
    assert int(model.optimizer.iterations) == int(ckpt.optimizer.iterations) + 10
    steps = _rows(os.path.join(run, "history_steps.csv"))
    assert sorted({r["epoch"] for r in steps}) == ["0", "1", "2"]
    # Rerunning a finished run does not train again.
    _, again = training.train(run, small_mnist, _build(small_mnist), epochs=3, batch_size=64,
                              verbose=0)
    assert again["test/accuracy"] == pytest.approx(metrics["test/accuracy"])
    assert len(_rows(os.path.join(run, rundir.HISTORY))) == 3
