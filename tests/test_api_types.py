"""The public API is typed (issue 11): every parameter of the registry's attacks and of the
public functions of evaluation, certify, sources and the loaders carries an annotation."""

import inspect

import pytest

from cnnvis_tf import attacks, certify, datasets, evaluation, rundir, sources, training


def _public_functions():
    out = {f"attacks.{n}": f for n, f in {**attacks.ATTACKS, **attacks.GENERATORS}.items()}
    for mod in (evaluation, certify, sources):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isfunction(obj):
                out[f"{mod.__name__}.{name}"] = obj
    out.update({"datasets.load": datasets.load, "training.train": training.train,
                "rundir.load_run": rundir.load_run, "rundir.load_model": rundir.load_model})
    return out


FUNCTIONS = _public_functions()


def test_the_list_is_not_empty():
    assert len(FUNCTIONS) > 30 and "attacks.class_from_noise" in FUNCTIONS


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_parameter_is_annotated(name):
    sig = inspect.signature(FUNCTIONS[name])
    missing = [p.name for p in sig.parameters.values() if p.annotation is inspect.Parameter.empty
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert not missing, f"{name}: parameters without a type annotation: {missing}"
