"""cnnvis_tf.vis exports: every name in __all__ resolves lazily to its module's object."""

import importlib
import subprocess
import sys

import pytest

from cnnvis_tf import vis


def test_every_export_resolves_to_its_module_object():
    assert vis.__all__ == sorted(vis._EXPORTS)
    for name, module in vis._EXPORTS.items():
        obj = getattr(vis, name)
        assert obj is getattr(importlib.import_module(f"cnnvis_tf.vis.{module}"), name), name


def test_explanation_names_are_exported():
    for name in ("LayerCAM", "RISE", "GradientInput", "VarGrad", "OcclusionMap", "explainer",
                 "deletion", "insertion", "mu_fidelity", "randomization_check", "random_logit",
                 "sparseness", "complexity", "spearman"):
        assert name in vis.__all__, name
    assert callable(vis.explainer) and callable(vis.deletion)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vis.nope  # noqa: B018


def test_import_stays_lazy():
    code = ("import sys, cnnvis_tf, cnnvis_tf.vis as v; "
            "print(sorted(m for m in sys.modules if m.startswith('cnnvis_tf.vis.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "cnnvis_tf.vis.attribution" not in out and "cnnvis_tf.vis.metrics" not in out, out
