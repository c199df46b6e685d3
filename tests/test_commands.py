"""The toolkit as a user meets it: installed console commands, --help, flag files, ~ in
paths, the offline --download error and the README's attack names."""

import ast
import configparser
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import urllib.error

import keras
import numpy as np
import pytest

from cnnvis_tf import attacks, datasets, rundir, sources, testing
from cnnvis_tf.errors import DataFilesError
from conftest import ROOT

SCRIPTS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "experiments",
                                                                          "*.py"))
                 if "\ndef main(" in open(p).read())


def _entry_points():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict(tuple(p.strip() for p in line.split("=")) for line in lines)


def test_every_script_has_a_console_command():
    entries = _entry_points()
    scripts = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "experiments"))
                     if f.endswith(".py") and f not in ("__init__.py", "common.py"))
    assert {"train", "attack", "report", "explain_eval", "merge"} <= set(scripts)
    for name in scripts:  # every script, including ones added later
        assert entries[f"cnnvis-{name.replace('_', '-')}"] == f"experiments.{name}:console_main"
    for target in entries.values():  # each target exists: a module-level console_main()
        module, func = target.split(":")
        tree = ast.parse(open(os.path.join(ROOT, *module.split(".")) + ".py").read())
        assert func in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, target


def test_pip_install_gives_commands_that_run_from_anywhere(tmp_path):
    """``pip install`` (into a folder) writes the commands; one runs from another directory
    with only the installed package on the path."""
    src = tmp_path / "src"
    os.makedirs(src)
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src)
    for name in ("cnnvis_tf", "experiments"):
        shutil.copytree(os.path.join(ROOT, name), src / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(src)], check=True,
                   capture_output=True, timeout=600)
    entries = _entry_points()
    for command in entries:
        assert os.access(site / "bin" / command, os.X_OK), command
    (info,) = glob.glob(str(site / "*.dist-info" / "entry_points.txt"))
    assert all(f"{c} = {t}" in open(info).read() for c, t in entries.items())
    assert os.path.exists(site / "experiments" / "attack.py")
    work = tmp_path / "elsewhere"
    os.makedirs(work)
    env = dict(os.environ, PYTHONPATH=str(site), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([str(site / "bin" / "cnnvis-attack"), "--help"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]  # absl's --help exit code
    out = proc.stdout
    assert "Attacks a trained run's test images" in out  # the script's own description
    for flag in ("--attack", "--eps", "--model_dir", "--model_path", "--dataset",
                 "--output_dir", "--seed"):
        assert f"  {flag}:" in out, flag
    assert "seed 00" not in out


HELP_DRIVER = textwrap.dedent("""
    import contextlib, importlib, io, json, sys
    from absl import app, flags
    from experiments import common
    FLAGS = flags.FLAGS
    base = set(FLAGS)
    out = {}
    for name in json.loads(sys.argv[1]):
        for f in list(FLAGS):
            if f not in base:
                delattr(FLAGS, f)
        sys.modules.pop(f"experiments.{name}", None)
        module = importlib.import_module(f"experiments.{name}")
        sys.argv = [f"cnnvis-{name}"]
        sys.modules["__main__"].__doc__ = None
        common._register_key_flags(module.main)  # what common.run does before app.run
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            app.usage(shorthelp=True, writeto_stdout=True)  # what --help prints
        own = [f.name for f in FLAGS.flags_by_module_dict().get(f"experiments.{name}", [])]
        out[name] = {"help": text.getvalue(), "own": own}
        if name == "train":
            FLAGS(["train", "--flagfile=configs/demo_train.flags", "--epochs=2"])
            cfg = common.train_config_from_flags()
            out["flagfile"] = {"dataset": cfg.dataset, "embedded": cfg.embedded,
                               "model": cfg.model, "epochs": cfg.epochs,
                               "batch_size": cfg.batch_size, "output_dir": FLAGS.output_dir}
            FLAGS.unparse_flags()
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def helps():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", HELP_DRIVER, json.dumps(SCRIPTS)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_shows_own_and_shared_flags_and_names_papers(helps):
    assert {"train", "attack", "robustness", "visualize"} <= set(SCRIPTS)
    for name in SCRIPTS:
        text, own = helps[name]["help"], helps[name]["own"]
        for flag in own + ["output_dir", "seed"]:
            assert f"  --{flag}:" in text or f"  --[no]{flag}:" in text, (name, flag)
        assert "seed 00" not in text.lower(), name
        assert text.lstrip()[:1] not in ("", "U"), name  # the script's docstring, not USAGE
    for name in ("attack", "robustness", "transfer", "visualize", "certify", "detect"):
        for flag in ("model_path", "model", "dataset", "clip_min", "class_names"):
            assert f"  --{flag}:" in helps[name]["help"], (name, flag)
    assert "  --epochs:" in helps["train"]["help"]  # training flags live in common
    assert all(helps[n]["own"] for n in ("attack", "robustness", "visualize"))


def test_flagfile_example_parses_into_a_valid_config(helps):
    assert helps["flagfile"] == {"dataset": "mnist", "embedded": True, "model": "conv2_fc500",
                                 "epochs": 2, "batch_size": 16, "output_dir": "runs/demo"}


def test_paths_expand_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    data = datasets.load("mnist", embedded=True)
    run = tmp_path / "run"
    os.makedirs(run)
    model = testing.tiny_cnn((28, 28, 1), 10, filters=4, fc_units=8, seed=0)
    model.save(run / rundir.MODEL)
    rundir.write_json(str(run / rundir.CONFIG), {**data.facts(), "embedded": True})
    loaded = rundir.load_run("~/run")
    assert loaded.path == str(run) and loaded.fingerprint == rundir.model_fingerprint(model)
    src = sources.load_model_source("~/run/model.keras")
    assert src.path == str(run / "model.keras")
    os.makedirs(tmp_path / "data")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data" / "mnist.npz",
             x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
             y_train=np.arange(20) % 10,
             x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), y_test=np.arange(10))
    full = datasets.load("mnist", data_dir="~/data")
    assert full.source == str(tmp_path / "data" / "mnist.npz") and len(full.x_test) == 10
    npz = sources.load_dataset_source("~/data/mnist.npz")
    np.testing.assert_array_equal(npz.y_test, np.arange(10))
    from experiments import common

    assert common.make_output_dir("~/out") == str(tmp_path / "out")
    assert os.path.isdir(tmp_path / "out")


@pytest.mark.parametrize("name,target", [
    ("mnist", "keras.datasets.mnist.load_data"),
    ("cifar10", "keras.datasets.cifar10.load_data"),
    ("svhn", "keras.utils.get_file"),
])
def test_download_offline_is_one_clear_line(name, target, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # empty cache: a download is needed

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid/file: None -- "
                        "[Errno -3] Temporary failure in name resolution")

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("[Errno 101] Network is unreachable")

    module, attr = target.rsplit(".", 1)
    parent = keras
    for part in module.split(".")[1:]:
        parent = getattr(parent, part)
    monkeypatch.setattr(parent, attr, offline if name != "svhn" else unreachable)
    with pytest.raises(DataFilesError) as err:
        datasets.load(name, download=True)
    message = str(err.value)
    assert "\n" not in message and "--download could not fetch" in message
    assert "--data_dir" in message and ("name resolution" in message or "unreachable" in message)


def _readme_attack_names():
    text = open(os.path.join(ROOT, "README.md")).read()
    names = set()
    for start in ("Attacks (`cnnvis_tf.attacks.ATTACKS`", "Native Keras 3 / TF implementations"):
        i = text.index(start)
        end = text.index("\n\n", i)
        stop = text.find("Its automatic checks", i, end)  # then methods, not attacks
        paragraph = text[i: stop if stop > 0 else end]
        names |= set(re.findall(r"`([a-z][a-z0-9_]*)`", paragraph))
    return names


def test_readme_attack_names_are_the_registry():
    registry = set(attacks.ATTACKS) | set(getattr(attacks, "GENERATORS", {}))
    named = _readme_attack_names()
    unknown = {n for n in named - registry if not callable(getattr(attacks, n, None))}
    assert unknown == set(), "README names attacks that are neither registered nor functions"
    assert registry - named == set(), "registry attacks missing from the README"


def test_readme_refers_only_to_files_in_the_repository():
    text = open(os.path.join(ROOT, "README.md")).read()
    assert "../" not in text
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert "docs/DESIGN.md" in links
    for link in links:
        if "://" not in link:
            assert os.path.exists(os.path.join(ROOT, link)), link
    for path in re.findall(r"--flagfile=(\S+)", text):
        assert os.path.exists(os.path.join(ROOT, path)), path
