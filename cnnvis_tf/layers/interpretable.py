"""Interpretable convolutional filters: part templates, the mask layer and the filter loss.

Each filter of an interpretable conv-layer should respond to one object part at one place.
For a feature map ``x`` (``n x n``) there are ``n^2`` positive templates ``T_mu``, one per
possible part location ``mu``, and one negative template ``T^-`` (the part is absent):

    T_mu[i, j] = tau * max(1 - beta * ||(i, j) - mu||_1 / n, -1),    T^-[i, j] = -tau,

with ``tau = 0.5 / n^2``, ``beta = 4`` and priors ``p(T^-) = alpha = n^2 / (1 + n^2)``,
``p(T_mu) = (1 - alpha) / n^2``. The mask layer keeps only the activation around the
strongest response; the filter loss is the negative mutual information between feature
maps and templates, which is low when every filter fires at a single place (or not at all).

References:
  Zhang, Wu and Zhu. "Interpretable convolutional neural networks." CVPR 2018,
  Section 3 (mask layer, Eq. 1-3 filter loss), and seed 000 section 1.3.1.
"""

import keras
import numpy as np
from keras import ops

from cnnvis_tf.checks import check_nonneg, check_positive, invalid
from cnnvis_tf.errors import InputError
from cnnvis_tf.layers.constraints import _fraction

__all__ = ["InterpretableFilterMask", "filter_loss", "part_templates", "insert_filter_mask"]


def _side(height, width):
    return float(max(height, width))


def part_templates(height, width, beta=4.0):
    """Positive templates without the ``tau`` factor, shape ``(h*w, h, w)``, values in [-1, 1].

    Template ``k`` is centred at position ``(k // w, k % w)``.
    """
    ii, jj = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    pos = np.stack([ii.ravel(), jj.ravel()], axis=1)
    dist = np.abs(pos[:, None, :] - pos[None, :, :]).sum(-1)
    t = np.maximum(1.0 - beta * dist / _side(height, width), -1.0)
    return t.reshape(height * width, height, width).astype("float32")


def template_mask(inputs, beta=4.0):
    """The template ``max(1 - beta ||.-mu_hat||_1 / n, -1)`` at each map's arg-max ``mu_hat``.

    Args:
      inputs: ``(batch, h, w, filters)`` feature maps.

    Returns:
      A tensor of the same shape (no gradient flows through the arg-max).
    """
    h, w = int(inputs.shape[1]), int(inputs.shape[2])
    flat = ops.reshape(ops.transpose(inputs, (0, 3, 1, 2)), (-1, ops.shape(inputs)[3], h * w))
    peak = ops.argmax(flat, axis=-1)
    pi = ops.cast(peak // w, "float32")[..., None, None]
    pj = ops.cast(peak % w, "float32")[..., None, None]
    gi = ops.reshape(ops.arange(h, dtype="float32"), (1, 1, h, 1))
    gj = ops.reshape(ops.arange(w, dtype="float32"), (1, 1, 1, w))
    dist = ops.abs(gi - pi) + ops.abs(gj - pj)
    mask = ops.maximum(1.0 - beta * dist / _side(h, w), -1.0)
    return ops.stop_gradient(ops.cast(ops.transpose(mask, (0, 2, 3, 1)), inputs.dtype))


def filter_loss(inputs, beta=4.0, tau=None, alpha=None):
    """Sum over filters of ``-MI(X; T)`` on a batch of feature maps (Zhang et al., Eq. 2).

    ``p(x | T) = exp(tr(x . T)) / Z_T`` over the batch images ``x``, ``p(x) = sum_T p(T)
    p(x | T)`` and ``MI = sum_T p(T) sum_x p(x | T) log(p(x | T) / p(x))``; the paper's
    decomposition ``-H(T) + H(T'|X) + sum_x p(T+, x) H(T+|X=x)`` is this same quantity.
    Computed exactly in the log domain (no approximation of the paper's loss).

    Args:
      inputs: ``(batch, h, w, filters)`` non-negative feature maps (after ReLU).
      beta: template fall-off (4 in the paper).
      tau: score scale; ``None`` means ``0.5 / (h * w)``.
      alpha: prior of the negative template; ``None`` means ``h*w / (1 + h*w)``.

    Returns:
      A scalar float tensor (lower is more interpretable).
    """
    beta, tau, alpha = _check_template_args(beta, tau, alpha)
    h, w = int(inputs.shape[1]), int(inputs.shape[2])
    hw = h * w
    tau = 0.5 / hw if tau is None else tau
    alpha = hw / (1.0 + hw) if alpha is None else alpha
    x = ops.reshape(ops.cast(inputs, "float32"), (-1, hw, ops.shape(inputs)[3]))
    templates = ops.convert_to_tensor(tau * part_templates(h, w, beta).reshape(hw, hw))
    s_pos = ops.einsum("bpc,qp->bcq", x, templates)
    s_neg = -tau * ops.sum(x, axis=1)[..., None]
    scores = ops.concatenate([s_pos, s_neg], axis=-1)  # (batch, filters, hw + 1)
    log_prior = ops.convert_to_tensor(
        np.log(np.r_[np.full(hw, (1.0 - alpha) / hw), alpha]).astype("float32")
    )
    log_px_t = scores - ops.logsumexp(scores, axis=0, keepdims=True)
    log_px = ops.logsumexp(log_px_t + log_prior, axis=-1, keepdims=True)
    mi = ops.sum(ops.exp(log_prior) * ops.exp(log_px_t) * (log_px_t - log_px), axis=(0, 2))
    return -ops.sum(mi)


@keras.saving.register_keras_serializable(package="cnnvis_tf")
class InterpretableFilterMask(keras.layers.Layer):
    """Masks each filter's map by the part template centred at its strongest activation.

    ``output = max(x * T_mu_hat, 0)`` with ``T`` as in :func:`template_mask` (the paper's
    template without ``tau``, which would only rescale the activations). As in the paper the
    mask acts while training, to teach each filter one part; at inference the layer is the
    identity unless ``mask_at_inference``. With ``loss_weight > 0`` the layer adds
    ``loss_weight * filter_loss(inputs)`` to the model losses in training mode, so a plain
    ``model.fit`` trains the interpretable filters.

    Args:
      beta: template fall-off (4 in the paper).
      tau: score scale of the filter loss (``None``: ``0.5 / n^2``).
      alpha: prior of the negative template (``None``: ``n^2 / (1 + n^2)``).
      loss_weight: weight of the filter loss (0 disables it).
      mask_at_inference: also mask when ``training`` is false.
      **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
      inputs: ``(batch, h, w, filters)`` feature maps, normally after a ReLU.
      training: whether the layer runs in training mode.

    References:
      Zhang, Wu and Zhu. "Interpretable convolutional neural networks." CVPR 2018.
    """

    def __init__(
        self, beta=4.0, tau=None, alpha=None, loss_weight=0.0, mask_at_inference=False, **kwargs
    ):
        super().__init__(**kwargs)
        self.beta, self.tau, self.alpha = _check_template_args(beta, tau, alpha)
        self.loss_weight = _number(check_nonneg, "loss_weight", loss_weight)
        if not isinstance(mask_at_inference, (bool, np.bool_)):
            raise invalid("mask_at_inference", "True or False", mask_at_inference)
        self.mask_at_inference = bool(mask_at_inference)

    def call(self, inputs, training=False):
        if training and self.loss_weight > 0:
            self.add_loss(self.loss_weight * filter_loss(inputs, self.beta, self.tau, self.alpha))
        if training or self.mask_at_inference:
            return ops.maximum(inputs * template_mask(inputs, self.beta), 0.0)
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta": self.beta,
                "tau": self.tau,
                "alpha": self.alpha,
                "loss_weight": self.loss_weight,
                "mask_at_inference": self.mask_at_inference,
            }
        )
        return config


def _number(check, name, value):
    """``check(name, value)`` (``check_nonneg``/``check_positive``) that also rejects strings
    and booleans."""
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise invalid(name, "a finite number " + ("> 0" if check is check_positive else ">= 0"),
                      value)
    return check(name, value)


def _check_template_args(beta, tau, alpha):
    """``(beta, tau, alpha)`` of the filter loss, checked (None keeps the paper's value)."""
    beta = _number(check_positive, "beta", beta)
    tau = None if tau is None else _number(check_positive, "tau", tau)
    if alpha is not None:
        alpha = _fraction("alpha", alpha, low_open=True, high_open=True, expected="None or ")
    return beta, tau, alpha


def insert_filter_mask(model, layer_name=None, **mask_kwargs):
    """A functional copy of ``model`` (same weights, fresh layers) with an
    :class:`InterpretableFilterMask` after ``layer_name``.

    The layers are copied rather than shared so that ``layer.output`` stays unambiguous
    (feature extraction for the smoothness penalty, visualizations).

    Args:
      model: functional model.
      layer_name: layer whose output is masked; ``None`` picks the ``_relu`` activation of
        the last Conv2D (the top conv-layer, as in the paper), else the last Conv2D.
      **mask_kwargs: arguments of :class:`InterpretableFilterMask`.

    Returns:
      The new functional model; the mask layer is named ``<layer_name>_mask``.
    """
    names = [layer.name for layer in model.layers]
    if layer_name is None:
        convs = [ly.name for ly in model.layers if isinstance(ly, keras.layers.Conv2D)]
        if not convs:
            raise InputError("The model has no Conv2D layer to make interpretable.")
        layer_name = f"{convs[-1]}_relu" if f"{convs[-1]}_relu" in names else convs[-1]
    if layer_name not in names:
        raise InputError(
            f"Unknown layer {layer_name!r} for the filter mask. Choose among: {', '.join(names)}."
        )
    mask = InterpretableFilterMask(name=f"{layer_name}_mask", **mask_kwargs)

    def call_function(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        return mask(out) if layer.name == layer_name else out

    clone = keras.models.clone_model(model, call_function=call_function)
    for layer in model.layers:
        if layer.weights:
            clone.get_layer(layer.name).set_weights(layer.get_weights())
    return clone
