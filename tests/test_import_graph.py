"""The package's imports go one way: data -> models -> training -> run dir -> attacks /
vis / defenses -> evaluation -> recipes -> experiments (README "Architecture")."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Rank of each top-level unit: a module may import units of a lower rank only (and itself).
RANK = {
    "cnnvis_tf.errors": 0,
    "cnnvis_tf.checks": 1,
    "cnnvis_tf.rundir": 1,
    "cnnvis_tf.progress": 1,
    "cnnvis_tf.datasets": 2,
    "cnnvis_tf.models": 2,
    "cnnvis_tf.precision": 2,
    "cnnvis_tf.testing": 3,
    "cnnvis_tf.volatility": 3,
    "cnnvis_tf.sources": 3,
    "cnnvis_tf.layers": 3,
    "cnnvis_tf.tblog": 3,
    "cnnvis_tf.training": 4,
    "cnnvis_tf.distribute": 4,
    "cnnvis_tf.attacks": 5,
    "cnnvis_tf.vis": 6,
    "cnnvis_tf.vis.metrics": 6,  # works on model functions: imports no other vis module
    "cnnvis_tf.defenses": 6,
    "cnnvis_tf.evaluation": 7,
    "cnnvis_tf.certify": 7,
    "cnnvis_tf.recipes": 8,
    "cnnvis_tf.report": 8,
    "cnnvis_tf": 9,
    "experiments.common": 10,
    "experiments": 11,
}


def _unit(module):
    """The unit of a dotted module name: its longest prefix in RANK."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        if name in RANK:
            return name
    return None


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path):
    """Every cnnvis_tf/experiments module imported anywhere in the file (lazy ones too)."""
    tree = ast.parse(open(path).read())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                sub = os.path.join(ROOT, *full.split("."))
                out.append((full if os.path.exists(sub + ".py") or os.path.isdir(sub)
                            else node.module, node.lineno))
    return [(m, ln) for m, ln in out if m.split(".")[0] in ("cnnvis_tf", "experiments")]


def _files():
    for top in ("cnnvis_tf", "experiments"):
        for folder, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                if name.endswith(".py"):
                    yield os.path.join(folder, name)


def back_edges():
    bad = []
    for path in _files():
        me = _module_name(path)
        my_unit = _unit(me)
        for target, line in _imports(path):
            unit = _unit(target)
            if me.startswith("experiments.") and target.startswith("experiments.") and \
                    target not in ("experiments", "experiments.common") and target != me:
                bad.append(f"{me}:{line} imports another script {target}")
                continue
            if unit is None or unit == my_unit:
                continue
            if RANK[unit] >= RANK[my_unit]:
                bad.append(f"{me}:{line} imports {target} (rank {RANK[unit]} >= "
                           f"{RANK[my_unit]})")
    return bad


def test_no_back_edges():
    assert back_edges() == []


def test_rundir_imports_only_errors():
    mods = {m for m, _ in _imports(os.path.join(ROOT, "cnnvis_tf", "rundir.py"))}
    assert mods <= {"cnnvis_tf.errors"}


def test_no_script_imports_another():
    for path in _files():
        me = _module_name(path)
        if me.startswith("experiments."):
            others = {m for m, _ in _imports(path) if m.startswith("experiments.")
                      and m != "experiments.common"}
            assert not others, f"{me} imports {others}"


@pytest.mark.parametrize("edge", [("cnnvis_tf.layers.smoothness", "cnnvis_tf.defenses"),
                                  ("cnnvis_tf.training", "cnnvis_tf.defenses.wrapping"),
                                  ("experiments.demo", "experiments.train")])
def test_detects_a_back_edge(edge, monkeypatch, tmp_path):
    """The checker itself fails on a planted back-edge."""
    src, target = edge
    path = os.path.join(ROOT, *src.split(".")) + ".py"
    planted = tmp_path / "planted.py"
    planted.write_text(f"import {target}\n")
    real = _files

    def files():
        yield from (p for p in real() if p != path)
        yield str(planted)

    monkeypatch.setattr(__import__(__name__), "_files", files)
    monkeypatch.setattr(__import__(__name__), "_module_name",
                        lambda p, _real=_module_name: src if p == str(planted) else _real(p))
    assert any(target in b for b in back_edges())
