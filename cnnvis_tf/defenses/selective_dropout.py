"""Selective dropout: hard-negative training of only the most volatile units of one layer.

The volatility of a unit (a neuron of a Dense layer or a feature map of a Conv layer) is
``|‖a_adv‖_F - ‖a_orig‖_F|`` averaged over adversarial/original pairs
(:func:`cnnvis_tf.volatility.unit_volatility`). At iteration ``t``
the ``ceil(p_t * width)`` most volatile units of the chosen layer are selected, with

    p_t = 1 - exp(-alpha t) + p_0 exp(-alpha t),

and one update is made on the adversarial batch, then one on its original counterpart
(batches alternate, so the network learns the adversarial images without forgetting the
originals). Only the selected units' incoming weights of that layer (kernel slices and
biases) change; the other units' weights stay bit-identical (they are restored after the
optimizer step, so momentum or weight decay cannot move them). Other layers train
normally unless ``train_other_layers=False``. ``p = 1`` (``p0=1``) is the control: plain
hard-negative training.

References:
  Seed 004 (thesis "Visualization and selective dropout for adversarial image
  classification"), sections 5.2-5.4 (volatility, selective dropout, p schedule).
  Srivastava et al. "Dropout." JMLR 2014 (the randomized namesake).
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from cnnvis_tf.checks import check_fraction, check_nonneg, check_positive_int, invalid
from cnnvis_tf.errors import InputError
from cnnvis_tf.layers.constraints import check_seed
from cnnvis_tf.models import feature_model
from cnnvis_tf.volatility import unit_volatility

__all__ = ["SelectiveDropout", "p_schedule", "num_selected", "unit_volatility", "select_units"]


def _check_schedule(p0, alpha):
    """``(p0, alpha)`` checked: ``p0`` in (0, 1], ``alpha`` a finite number >= 0."""
    if isinstance(p0, (str, bytes)):
        raise invalid("p0", "a number in (0, 1]", p0)
    if isinstance(alpha, (str, bytes)):
        raise invalid("alpha", "a finite number >= 0", alpha)
    return check_fraction("p0", p0, low_open=True), check_nonneg("alpha", alpha)


def p_schedule(t, p0, alpha):
    """``p_t = 1 - e^(-alpha t) + p0 e^(-alpha t)`` (p0 at t = 0, tending to 1).

    Raises:
      InputError: ``p0`` outside (0, 1], ``alpha`` negative or not finite, ``t < 0``.
    """
    p0, alpha = _check_schedule(p0, alpha)
    t = check_nonneg("t", t)
    decay = math.exp(-alpha * t)
    return 1.0 - decay + p0 * decay


def num_selected(p, width):
    """``ceil(p * width)``, at least 1 (a tiny tolerance absorbs float round-off)."""
    return max(1, min(width, math.ceil(p * width - 1e-9)))


def select_units(volatility, p):
    """Boolean mask of the ``ceil(p * width)`` most volatile units."""
    volatility = np.asarray(volatility)
    k = num_selected(p, volatility.shape[0])
    mask = np.zeros(volatility.shape[0], dtype=bool)
    mask[np.argsort(-volatility, kind="stable")[:k]] = True
    return mask


class SelectiveDropout:
    """Trains ``model`` on adversarial/original pairs with selective dropout on one layer.

    Args:
      model: functional classifier returning logits (trained in place).
      layer_name: the Dense/Conv2D layer whose units are selected.
      p0: initial fraction of units trained, in (0, 1].
      alpha: schedule rate (0 keeps ``p = p0``).
      optimizer: defaults to SGD(1e-3, momentum 0.9) (seed 004 §5.1 uses momentum 0.9).
      loss: defaults to sparse categorical cross-entropy on logits.
      activation_layer: where volatility is measured; ``None``: ``<layer_name>_relu`` if it
        exists, else ``layer_name``.
      train_other_layers: also update the other layers' weights.

    Raises:
      InputError: for an unknown layer, a layer without kernel, or ``p0`` outside (0, 1].
    """

    def __init__(
        self,
        model,
        layer_name,
        p0=0.5,
        alpha=0.0,
        optimizer=None,
        loss=None,
        activation_layer=None,
        train_other_layers=True,
    ):
        names = [layer.name for layer in model.layers]
        if layer_name not in names or not hasattr(model.get_layer(layer_name), "kernel"):
            raise InputError(
                f"Invalid value received for argument `layer_name`. Expected a Dense or Conv "
                f"layer of the model. Received: layer_name={layer_name!r}"
            )
        p0, alpha = _check_schedule(p0, alpha)
        if not isinstance(train_other_layers, (bool, np.bool_)):
            raise invalid("train_other_layers", "True or False", train_other_layers)
        if activation_layer is not None and activation_layer not in names:
            raise invalid("activation_layer", "None or a layer of the model", activation_layer)
        self.model, self.layer_name, self.p0, self.alpha = model, layer_name, p0, alpha
        self.layer = model.get_layer(layer_name)
        self.width = int(self.layer.kernel.shape[-1])
        if activation_layer is None:
            relu = f"{layer_name}_relu"
            activation_layer = relu if relu in names else layer_name
        self.extractor = feature_model(model, [activation_layer], logits=False)
        self.optimizer = optimizer or keras.optimizers.SGD(1e-3, momentum=0.9)
        self.loss = loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.unit_vars = [v for v in (self.layer.kernel, self.layer.bias) if v is not None]
        ids = {id(v) for v in self.unit_vars}
        others = [v for v in model.trainable_variables if id(v) not in ids]
        self.train_vars = self.unit_vars + (others if train_other_layers else [])
        self.optimizer.build(self.train_vars)
        self.iteration = 0
        self._update = tf.function(self._masked_update)

    def fraction(self, t=None):
        """``p_t`` at iteration ``t`` (default: the current iteration)."""
        return p_schedule(self.iteration if t is None else t, self.p0, self.alpha)

    def _masked_update(self, x, y, unit_mask):
        with tf.GradientTape() as tape:
            loss = self.loss(y, self.model(x, training=True))
        grads = tape.gradient(loss, self.train_vars)
        n_unit = len(self.unit_vars)
        before = [ops.convert_to_tensor(v) for v in self.unit_vars]
        mask = ops.cast(unit_mask, "float32")
        grads = [g * ops.cast(mask, g.dtype) for g in grads[:n_unit]] + list(grads[n_unit:])
        self.optimizer.apply_gradients(zip(grads, self.train_vars))
        for v, old in zip(self.unit_vars, before):
            v.assign(ops.where(unit_mask, v, old))
        return loss

    def train_step(self, x_orig, x_adv, y):
        """One iteration: select units on this pair batch, update on x_adv then on x_orig.

        Returns:
          dict with ``loss_adv``, ``loss_orig``, ``p``, ``num_selected`` and the boolean
          ``selected`` mask (numpy).
        """
        p = self.fraction()
        selected = select_units(unit_volatility(self.extractor, x_orig, x_adv), p)
        mask = tf.constant(selected)
        loss_adv = self._update(tf.constant(x_adv), tf.constant(y), mask)
        loss_orig = self._update(tf.constant(x_orig), tf.constant(y), mask)
        self.iteration += 1
        return {
            "loss_adv": float(loss_adv),
            "loss_orig": float(loss_orig),
            "p": p,
            "num_selected": int(selected.sum()),
            "selected": selected,
        }

    def fit(self, x_orig, x_adv, y, epochs=1, batch_size=32, seed=0):
        """Shuffled passes over the pairs; returns per-iteration lists of the step results."""
        epochs = check_positive_int("epochs", epochs)
        batch_size = check_positive_int("batch_size", batch_size)
        seed = check_seed(seed)
        if len(x_orig) != len(x_adv) or len(x_orig) != len(y):
            raise InputError(
                "x_orig, x_adv and y must have the same length. Received: "
                f"{len(x_orig)}, {len(x_adv)}, {len(y)}."
            )
        rng = np.random.default_rng(seed)
        history = {"loss_adv": [], "loss_orig": [], "p": [], "num_selected": []}
        for _ in range(epochs):
            order = rng.permutation(len(y))
            for i in range(0, len(y), batch_size):
                idx = order[i : i + batch_size]
                out = self.train_step(x_orig[idx], x_adv[idx], y[idx])
                for key in history:
                    history[key].append(out[key])
        return history
