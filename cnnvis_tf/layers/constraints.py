"""Weight constraints for Parseval networks: tight-frame kernels and convex aggregation.

References:
  Cisse, Bojanowski, Grave, Dauphin and Usunier. "Parseval networks: improving robustness
  to adversarial examples." ICML 2017 (arXiv:1704.08847).
"""

import keras
import numpy as np
from keras import ops

from cnnvis_tf.checks import check_fraction, invalid

__all__ = ["ParsevalConstraint", "ConvexConstraint", "apply_parseval", "parseval_deviation"]


@keras.saving.register_keras_serializable(package="cnnvis_tf")
class ParsevalConstraint(keras.constraints.Constraint):
    """Keeps a kernel close to a Parseval tight frame (all singular values near 1).

    After each optimizer step the kernel, reshaped to a matrix ``W`` with one row per
    output unit (Dense ``(in, out)`` -> ``(out, in)``; Conv ``(kh, kw, cin, cout)`` ->
    ``(cout, kh*kw*cin)``), is replaced by one retraction step

        W <- (1 + beta) W - beta W W^T W,

    the gradient step on ``beta/4 ||W^T W - I||^2``. Each singular value ``s`` maps to
    ``(1 + beta) s - beta s^3`` whose stable fixed point is 1, so repeated application makes
    the smaller of ``W W^T`` and ``W^T W`` converge to the identity. With
    ``sample_fraction < 1`` only a random subset of rows is updated at each call, as the
    paper does to keep the cost low on wide layers.

    Args:
      beta: retraction step size in (0, 1) (the paper and seed 002 use 0.01 to 0.0003; the
        fixed point 1 is unstable for ``beta >= 1``).
      sample_fraction: fraction of rows updated per call in (0, 1]; ``None`` means all.
      seed: Python integer seed for the row sampling.

    References:
      Cisse et al. "Parseval networks: improving robustness to adversarial examples."
      ICML 2017, Section 4 (orthonormality constraint, Eq. 6, row sampling).
    """

    def __init__(self, beta=0.01, sample_fraction=None, seed=None):
        self.beta = _fraction("beta", beta, low_open=True, high_open=True)
        self.sample_fraction = None if sample_fraction is None else _fraction(
            "sample_fraction", sample_fraction, low_open=True, expected="None or ")
        self.seed = check_seed(seed)
        self.seed_generator = None
        if self.sample_fraction is not None and self.sample_fraction < 1:
            self.seed_generator = keras.random.SeedGenerator(seed)

    def _retract(self, w):
        wwt = ops.matmul(w, ops.transpose(w))
        return (1.0 + self.beta) * w - self.beta * ops.matmul(wwt, w)

    def __call__(self, w):
        shape = ops.shape(w)
        w = ops.convert_to_tensor(w)
        rows = ops.transpose(ops.reshape(w, (-1, shape[-1])))
        if self.seed_generator is None:
            new_rows = self._retract(rows)
        else:
            n_rows = int(rows.shape[0])
            k = max(1, int(round(self.sample_fraction * n_rows)))
            order = keras.random.shuffle(ops.arange(n_rows), seed=self.seed_generator)
            idx = order[:k]
            picked = self._retract(ops.take(rows, idx, axis=0))
            new_rows = ops.scatter_update(rows, ops.expand_dims(idx, -1), picked)
        return ops.reshape(ops.transpose(new_rows), shape)

    def get_config(self):
        return {"beta": self.beta, "sample_fraction": self.sample_fraction, "seed": self.seed}


@keras.saving.register_keras_serializable(package="cnnvis_tf")
class ConvexConstraint(keras.constraints.Constraint):
    """Projects weights onto the probability simplex: non-negative, summing to 1.

    Used for the aggregation weights of residual branches in Parseval networks
    (``y = sum_k alpha_k f_k(x)`` with ``alpha`` convex keeps the block 1-Lipschitz when each
    branch is). The projection is the Euclidean one, computed along ``axis`` by sorting.

    Args:
      axis: axis along which the weights must sum to 1 (default: the last).

    References:
      Cisse et al. "Parseval networks." ICML 2017, Section 4 (convexity constraint).
      Duchi, Shalev-Shwartz, Singer and Chandra. "Efficient projections onto the l1-ball
      for learning in high dimensions." ICML 2008 (simplex projection).
    """

    def __init__(self, axis=-1):
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise invalid("axis", "an integer", axis)
        self.axis = int(axis)

    def __call__(self, w):
        w = ops.moveaxis(ops.convert_to_tensor(w), self.axis, -1)
        n = w.shape[-1]
        u = ops.flip(ops.sort(w, axis=-1), axis=-1)
        css = ops.cumsum(u, axis=-1) - 1.0
        ks = ops.cast(ops.arange(1, n + 1), w.dtype)
        positive = ops.cast(u - css / ks > 0, w.dtype)
        rho = ops.sum(positive, axis=-1, keepdims=True)
        theta = ops.take_along_axis(css, ops.cast(rho, "int32") - 1, axis=-1) / rho
        return ops.moveaxis(ops.maximum(w - theta, 0.0), -1, self.axis)

    def get_config(self):
        return {"axis": self.axis}


def apply_parseval(model, beta=0.01, sample_fraction=None, seed=None, include_logits=True):
    """Puts a :class:`ParsevalConstraint` on every Dense/Conv kernel of ``model``, in place.

    The constraint is stored on the layer (so it is saved in ``model.keras``) and on the
    kernel variable (so the optimizer applies it after each step).

    Args:
      model: a built Keras model.
      beta, sample_fraction: see :class:`ParsevalConstraint`.
      seed: base seed; layer ``i`` gets ``seed + i``.
      include_logits: also constrain the layer named ``logits``.

    Returns:
      The names of the constrained layers.
    """
    ParsevalConstraint(beta, sample_fraction, check_seed(seed))  # checks, before any change
    names = []
    for layer in _kernel_layers(model):
        if layer.name == "logits" and not include_logits:
            continue
        layer_seed = None if seed is None else seed + len(names)
        constraint = ParsevalConstraint(beta, sample_fraction, layer_seed)
        layer.kernel_constraint = constraint
        layer.kernel.constraint = constraint
        names.append(layer.name)
    return names


def _fraction(name, value, *, low_open=False, high_open=False, expected=""):
    """``checks.check_fraction`` that also names strings and booleans as invalid."""
    lo, hi = "(" if low_open else "[", ")" if high_open else "]"
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise invalid(name, f"{expected}a number in {lo}0, 1{hi}", value)
    try:
        return check_fraction(name, value, low_open=low_open, high_open=high_open)
    except ValueError:
        raise invalid(name, f"{expected}a number in {lo}0, 1{hi}", value) from None


def check_seed(seed, name="seed"):
    """``seed`` as an int >= 0, or None; raises otherwise."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise invalid(name, "None or an integer >= 0", seed)
    return int(seed)


def parseval_deviation(kernel):
    """``||G - I||_F`` for the smaller Gram matrix ``G`` of the row-reshaped kernel."""
    shape = ops.shape(kernel)
    w = ops.transpose(ops.reshape(ops.convert_to_tensor(kernel), (-1, shape[-1])))
    if w.shape[0] > w.shape[1]:
        w = ops.transpose(w)
    gram = ops.matmul(w, ops.transpose(w))
    return float(ops.norm(gram - ops.eye(gram.shape[0], dtype=gram.dtype)))


def _kernel_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _kernel_layers(layer)
        elif isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)) and layer.built:
            yield layer
