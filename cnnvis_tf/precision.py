"""Mixed precision: Keras' ``mixed_float16`` policy, scoped, with float32 logits.

Keras' dtype policy is process-global; :func:`policy_scope` sets it for a block and always
restores the previous one, so a mixed-precision run (or test) cannot leak float16 layers into
the next model built in the process. Under ``mixed_float16`` layers compute in float16 and
keep float32 variables; the layers that produce a model's outputs must compute in float32
so that the logits, the softmax and the loss are float32 (Keras' mixed-precision guide):
:func:`with_policy` makes that copy of a functional model, with the same weights. Keras
wraps the optimizer of a ``mixed_float16`` model in a ``LossScaleOptimizer`` when it is
compiled (dynamic loss scaling).
"""

import contextlib

import keras

from cnnvis_tf.errors import InputError

__all__ = ["MIXED", "policy_scope", "with_policy", "output_dtypes", "is_mixed"]

MIXED = "mixed_float16"


@contextlib.contextmanager
def policy_scope(name: str | None):
    """Keras' global dtype policy is ``name`` inside the block (``None``: unchanged), and
    the previous policy again after it, also on an exception."""
    previous = keras.config.dtype_policy()
    if name is not None:
        keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def output_dtypes(model: keras.Model) -> list[str]:
    """The dtypes of a functional model's symbolic outputs."""
    return [str(keras.backend.standardize_dtype(t.dtype)) for t in model.outputs]


def is_mixed(model: keras.Model) -> bool:
    """Whether any layer of ``model`` (nested ones included) computes in float16."""
    return any(getattr(layer, "compute_dtype", "float32") == "float16"
               for layer in _all_layers(model))


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def with_policy(model: keras.Model, policy: str = MIXED) -> keras.Model:
    """A copy of the functional ``model`` whose layers compute under ``policy`` (e.g.
    ``"mixed_float16"`` or ``"float32"``) except the layers producing its outputs, which
    compute in float32; nested functional models are copied the same way (their own
    output layers included, so a classifier nested behind an input layer keeps float32
    logits). The weights are those of ``model`` (float32 variables under both policies).

    Raises:
      InputError: a model without symbolic outputs (subclassed) or a custom layer that
        cannot be rebuilt from its config.
    """
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if not outputs:
        raise InputError(f"with_policy needs a functional or Sequential model; {model.name!r} "
                         "has no symbolic outputs. Build it under "
                         "precision.policy_scope(...) instead, with a float32 last layer.")
    last = {id(t._keras_history[0]) for t in outputs}

    def clone(layer):
        if isinstance(layer, keras.Model):  # nested: its own output layers stay float32
            return with_policy(layer, policy)
        config = layer.get_config()
        config["dtype"] = "float32" if id(layer) in last else policy
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=clone)
    except (TypeError, ValueError, NotImplementedError) as err:
        raise InputError(f"with_policy could not rebuild {model.name!r} from its layers' "
                         f"configs ({type(err).__name__}: {err}).") from err
    copy.set_weights(model.get_weights())
    return copy
