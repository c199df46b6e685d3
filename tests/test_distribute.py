"""Batch jobs under tf.distribute and in shards (issue 12 B).

Logical CPU devices must exist before TensorFlow starts, so each script's comparisons run
in one subprocess that calls its ``main`` several times (as tests/test_sources.py does).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from cnnvis_tf import certify
from cnnvis_tf.errors import InputError
from conftest import ROOT
from experiments import merge

# Commands: ["main", argv] runs the script, ["merge", dir] experiments.merge, ["remove",
# path] deletes a file, ["mtime", path] records its modification time, ["library"] checks
# distribute.split_run and certify directly under MirroredStrategy.
DRIVER = textwrap.dedent("""
    import json, os, sys
    from absl import flags
    from experiments import {script} as script, common, merge
    common.configure_devices(2)  # before TensorFlow starts
    out = {{"mtime": {{}}}}

    def library():
        import numpy as np, tensorflow as tf
        from cnnvis_tf import certify, distribute, models
        owner = tf.function(lambda x: x[:, 0] * 0 + tf.cast(
            tf.distribute.get_replica_context().replica_id_in_sync_group, tf.float32))
        model = models.conv2_fc500((28, 28, 1), 10)
        x = np.random.default_rng(0).uniform(size=(5, 28, 28, 1)).astype("float32")
        one = certify.Smoothed(model, 10, 0.25, batch_size=40, seed=1).certify(x, 4, 60)
        with tf.distribute.MirroredStrategy().scope():
            out["replicas"] = distribute.num_replicas()
            out["owner"] = distribute.split_run(owner, (tf.zeros([5, 3]),)).numpy().tolist()
            two = certify.Smoothed(model, 10, 0.25, batch_size=40, seed=1).certify(x, 4, 60)
        out["certify_equal"] = all(np.array_equal(a, b) for a, b in zip(one, two))

    for cmd in json.loads(sys.argv[1]):
        flags.FLAGS.unparse_flags()
        if cmd[0] == "main":  # as python -m experiments.<script> <argv> would
            sys.argv = ["{script}", "--verbosity=-1", "--num_cpu_devices=2"] + cmd[1]
            flags.FLAGS(sys.argv)
            script.main([])
        elif cmd[0] == "merge":
            flags.FLAGS(["merge", "--verbosity=-1", "--output_dir=" + cmd[1]])
            merge.main([])
        elif cmd[0] == "remove":
            os.remove(cmd[1])
        elif cmd[0] == "mtime":
            out["mtime"].setdefault(cmd[1], []).append(os.path.getmtime(cmd[1]))
        else:
            library()
    print("RESULT " + json.dumps(out))
""")


def _driver(script, commands):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0")
    proc = subprocess.run([sys.executable, "-c", DRIVER.format(script=script),
                           json.dumps(commands)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _npz(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def _numbers(obj, drop=("seconds", "flags", "argv", "merged_shards")):
    """``obj`` without timings and command-line records (what may differ between runs)."""
    if isinstance(obj, dict):
        return {k: _numbers(v, drop) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [_numbers(v, drop) for v in obj]
    return obj


def _json(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def attack_runs(mnist_run, tmp_path_factory):
    """FGSM and PGD on 13 images in batches of 5 (replica parts 2 + 3, then 1 + 2) on one
    device and on 2 logical CPUs (MirroredStrategy); PGD in 3 shards, shard 1 then
    "interrupted" (marker removed), all three rerun, merged."""
    out = str(tmp_path_factory.mktemp("attack"))
    base = [f"--model_dir={mnist_run['dir']}", "--num_examples=13", "--batch_size=5",
            "--seed=3"]
    fgsm = base + ["--attack=fgsm", "--eps=0.1"]
    pgd = base + ["--attack=pgd", "--eps=0.1", "--params=nb_iter=3"]
    shards = [["main", pgd + ["--num_shards=3", f"--shard_index={i}",
                              f"--output_dir={out}/sharded"]] for i in range(3)]
    npz = [f"{out}/sharded/shards/shard-{i}-of-3/shard.npz" for i in range(3)]
    commands = [
        ["library"],
        ["main", fgsm + [f"--output_dir={out}/fgsm_one"]],
        ["main", fgsm + ["--strategy=mirrored", f"--output_dir={out}/fgsm_two"]],
        ["main", pgd + [f"--output_dir={out}/pgd_one"]],
        ["main", pgd + ["--strategy=mirrored", f"--output_dir={out}/pgd_two"]],
        *shards, *[["mtime", p] for p in npz],
        ["remove", f"{out}/sharded/shards/shard-1-of-3/shard.json"],
        *shards, *[["mtime", p] for p in npz],
        ["merge", f"{out}/sharded"],
    ]
    return out, npz, _driver("attack", commands)


def test_split_run_splits_batches_in_order_across_two_replicas(attack_runs):
    _, _, res = attack_runs
    assert res["replicas"] == 2
    assert res["owner"] == [0, 0, 1, 1, 1]  # 5 examples: parts of 2 and 3, gathered in order
    assert res["certify_equal"]  # smoothing certificates: same noise, same answers


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_two_replicas_equal_one_device(attack_runs, attack):
    out = attack_runs[0]
    one, two = (_npz(f"{out}/{attack}_{k}/adversarial.npz") for k in ("one", "two"))
    assert one["x_adv"].shape == (13, 28, 28, 1)
    assert np.abs(one["x_adv"] - two["x_adv"]).max() <= 1e-6
    assert np.abs(one["x_adv"] - one["x"]).max() > 0.05  # the attack did move the images
    np.testing.assert_array_equal(one["pred_adv"], two["pred_adv"])
    m1, m2 = (_json(f"{out}/{attack}_{k}/metrics.json") for k in ("one", "two"))
    assert m1["adversarial_accuracy"] == m2["adversarial_accuracy"]
    assert m1["clean_accuracy"] == m2["clean_accuracy"]


def test_merged_shards_equal_the_unsharded_attack(attack_runs):
    out = attack_runs[0]
    one, merged = _npz(f"{out}/pgd_one/adversarial.npz"), _npz(f"{out}/sharded/adversarial.npz")
    assert sorted(one) == sorted(merged)
    for k in one:
        np.testing.assert_array_equal(one[k], merged[k], err_msg=k)
    m1, m2 = _json(f"{out}/pgd_one/metrics.json"), _json(f"{out}/sharded/metrics.json")
    assert _numbers(m1) == _numbers(m2)
    assert os.path.exists(f"{out}/sharded/figures/examples.png")
    cfg = _json(f"{out}/sharded/config.json")
    assert cfg["params"] == _json(f"{out}/pgd_one/config.json")["params"]
    assert cfg["merged_shards"] == 3


def test_finished_shards_are_skipped_and_an_interrupted_one_recomputed(attack_runs):
    _, npz, res = attack_runs
    t = res["mtime"]
    assert t[npz[0]][0] == t[npz[0]][1] and t[npz[2]][0] == t[npz[2]][1]  # skipped
    assert t[npz[1]][1] > t[npz[1]][0]  # its marker was gone: computed again


def test_merge_names_a_missing_shard_and_its_command(attack_runs, tmp_path):
    out = attack_runs[0]
    src = f"{out}/sharded/shards"
    dst = tmp_path / "job" / "shards"
    os.makedirs(dst)
    for i in (0, 2):
        os.symlink(f"{src}/shard-{i}-of-3", dst / f"shard-{i}-of-3")
    with pytest.raises(InputError, match=r"Shard 1 of 3 .* is missing") as err:
        merge.find_shards(str(tmp_path / "job"))
    assert "python -m experiments.attack" in str(err.value)
    assert "--shard_index=1" in str(err.value) and "--shard_index=0" not in str(err.value)
    with pytest.raises(InputError, match="No shards"):
        merge.find_shards(str(tmp_path / "empty"))


def test_robustness_merged_shards_and_two_replicas_equal_one_device(mnist_run, tmp_path):
    """The table (FGSM sweep + sanity checks: PGD, unbounded BIM) on 11 images in batches of
    4: sharded in 2 and merged, and on 2 logical CPUs, equals the one-device table."""
    args = [f"--model_dirs={mnist_run['dir']}", "--eps=0.05,0.2", "--num_examples=11",
            "--batch_size=4"]
    _driver("robustness", [
        ["main", args + [f"--output_dir={tmp_path}/one"]],
        ["main", args + ["--strategy=mirrored", f"--output_dir={tmp_path}/two"]],
        *[["main", args + ["--num_shards=2", f"--shard_index={i}",
                           f"--output_dir={tmp_path}/sharded"]] for i in range(2)],
        ["merge", f"{tmp_path}/sharded"],
    ])
    ref = _numbers(_json(f"{tmp_path}/one/results.json"))
    assert ref["models"]["mnist"]["runs"][0]["num_examples"] == 11
    assert 0 < ref["models"]["mnist"]["mean"]["Clean"] <= 1
    for other in ("two", "sharded"):
        assert _numbers(_json(f"{tmp_path}/{other}/results.json")) == ref, other
        with open(f"{tmp_path}/{other}/table.csv") as a, open(f"{tmp_path}/one/table.csv") as b:
            assert a.read() == b.read()
    assert os.path.exists(f"{tmp_path}/sharded/figures/accuracy_vs_linf.png")


def test_certify_parts_get_the_noise_of_the_whole_set():
    """A shard's certificates (``start`` = its first index) equal the unsharded ones."""
    def linear(z):
        v = tf.reshape(z, [-1, 1]) - 0.5
        return tf.concat([-10.0 * v, 10.0 * v], axis=1)

    x = np.linspace(0.3, 0.7, 6, dtype=np.float32).reshape(-1, 1, 1, 1)
    whole = certify.Smoothed(linear, 2, 0.25, batch_size=64, seed=5).certify(x, 8, 200)
    parts = [certify.Smoothed(linear, 2, 0.25, batch_size=64, seed=5).certify(
        x[a:b], 8, 200, start=a) for a, b in ((0, 4), (4, 6))]
    for i, arr in enumerate(whole):
        np.testing.assert_array_equal(arr, np.concatenate([p[i] for p in parts]))
    other = certify.Smoothed(linear, 2, 0.25, batch_size=64, seed=6).counts(x, 200)
    assert not np.array_equal(other, certify.Smoothed(linear, 2, 0.25, batch_size=64,
                                                      seed=5).counts(x, 200))
