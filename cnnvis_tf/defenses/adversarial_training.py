"""Adversarial training, combinable with Parseval and Laplacian smoothness regularization.

:class:`DefenseModel` wraps a functional classifier and replaces ``train_step``: a fraction
``adv_ratio`` of each batch is replaced by FGSM or PGD examples made on the fly (inside the
step, with ``tf.GradientTape``) against the current weights; the loss adds the smoothness
penalty on the clean part of the batch; Parseval retraction runs through the kernel
constraints after each optimizer step. Compile and ``fit`` the wrapper, then save
``wrapper.classifier`` (the plain functional model).

References:
  Goodfellow, Shlens and Szegedy. "Explaining and harnessing adversarial examples." 2015.
  Kurakin, Goodfellow and Bengio. "Adversarial machine learning at scale." ICLR 2017
  (mixing k adversarial examples per batch, per-example eps from a truncated normal).
  Madry et al. "Towards deep learning models resistant to adversarial attacks." ICLR 2018.
  Seed 002 section 3.1 (sigma matched to an SNR of 33 dB), section 4.2.2 (smoothness on the
  non-augmented part of the batch).
"""

import keras
import tensorflow as tf
from keras import ops

from cnnvis_tf.errors import InputError
from cnnvis_tf.layers.constraints import apply_parseval
from cnnvis_tf.layers.smoothness import (
    default_smooth_layers,
    feature_model,
    laplacian_smoothness_penalty,
)

__all__ = ["DefenseModel", "fgsm_perturb", "pgd_perturb", "snr_eps", "truncated_normal_eps"]

ADV_METHODS = ("fgsm", "pgd")


def _xent(y, logits):
    if len(y.shape) == len(logits.shape):
        return keras.losses.categorical_crossentropy(y, logits, from_logits=True)
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)


def _per_example(eps, x):
    eps = ops.cast(ops.convert_to_tensor(eps), x.dtype)
    if len(eps.shape) == 0:
        return eps
    return ops.reshape(eps, (-1,) + (1,) * (len(x.shape) - 1))


def _input_grad(model, x, y):
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = ops.sum(_xent(y, model(x, training=False)))
    return tape.gradient(loss, x)


def fgsm_perturb(model, x, y, eps, clip_min=0.0, clip_max=1.0):
    """``clip(x + eps * sign(grad_x CE(model(x), y)))``; ``eps`` scalar or per example."""
    x = ops.convert_to_tensor(x)
    grad = _input_grad(model, x, y)
    return ops.clip(x + _per_example(eps, x) * ops.sign(grad), clip_min, clip_max)


def pgd_perturb(model, x, y, eps, steps=7, step_size=None, clip_min=0.0, clip_max=1.0, seed=None):
    """L-inf PGD from a uniform random start (Madry et al.); step size ``2.5 eps / steps``."""
    x = ops.convert_to_tensor(x)
    eps = _per_example(eps, x)
    step = 2.5 * eps / steps if step_size is None else step_size
    noise = keras.random.uniform(ops.shape(x), -1.0, 1.0, dtype=x.dtype, seed=seed)
    x_adv = ops.clip(x + eps * noise, clip_min, clip_max)
    for _ in range(int(steps)):
        x_adv = x_adv + step * ops.sign(_input_grad(model, x_adv, y))
        x_adv = ops.clip(ops.clip(x_adv, x - eps, x + eps), clip_min, clip_max)
    return ops.stop_gradient(x_adv)


def snr_eps(x, snr_db):
    """Per-example FGSM ``eps`` giving ``20 log10(||x||_2 / ||delta||_2) = snr_db``.

    With ``delta = eps * sign(g)``, ``||delta||_2 = eps * sqrt(d)`` (ignoring clipping).
    """
    x = ops.reshape(ops.cast(ops.convert_to_tensor(x), "float32"), (ops.shape(x)[0], -1))
    d = ops.cast(ops.shape(x)[1], "float32")
    return ops.norm(x, axis=1) / (ops.sqrt(d) * 10.0 ** (snr_db / 20.0))


def truncated_normal_eps(sigma, batch_size, seed=None):
    """``|N(0, sigma)|`` truncated at ``2 sigma``: per-example budgets of seed 002 §3.1."""
    return ops.abs(keras.random.truncated_normal((batch_size,), stddev=1.0, seed=seed)) * sigma


@keras.saving.register_keras_serializable(package="cnnvis_tf")
class DefenseModel(keras.Model):
    """A training wrapper around a classifier: adversarial training + regularizers.

    Args:
      classifier: functional model mapping inputs in ``[clip_min, clip_max]`` to logits.
      adv_training: ``None`` (off), ``"fgsm"`` or ``"pgd"``.
      adv_ratio: fraction of each batch replaced by adversarial examples, in [0, 1].
      adv_eps: fixed L-inf budget (input units). Exclusive with ``adv_snr_db``.
      adv_snr_db: per-example budgets ``|N(0, sigma)|`` truncated at ``2 sigma`` with
        ``sigma`` the mean FGSM budget that gives this SNR on the current clean batch.
      adv_loss_weight: weight ``lambda`` of adversarial examples in the loss (Kurakin et al.);
        weights are renormalized to mean 1.
      pgd_steps: PGD iterations.
      parseval_beta: if > 0, :func:`apply_parseval` is applied to ``classifier``.
      smooth_gamma: weight of :func:`laplacian_smoothness_penalty` (0 disables it).
      smooth_power: Laplacian power ``m``.
      smooth_layers: layer names for the penalty; ``None``: all ``*_relu``/``*_out``.
      clip_min, clip_max: valid input range.
      seed: seed for the random budgets and PGD starts.
      **kwargs: base ``keras.Model`` arguments.
    """

    def __init__(
        self,
        classifier,
        adv_training=None,
        adv_ratio=0.5,
        adv_eps=None,
        adv_snr_db=None,
        adv_loss_weight=1.0,
        pgd_steps=7,
        parseval_beta=0.0,
        smooth_gamma=0.0,
        smooth_power=1,
        smooth_layers=None,
        clip_min=0.0,
        clip_max=1.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if adv_training not in (None,) + ADV_METHODS:
            raise InputError(
                "Invalid value received for argument `adv_training`. Expected None, 'fgsm' or "
                f"'pgd'. Received: adv_training={adv_training}"
            )
        if not 0 <= adv_ratio <= 1:
            raise InputError(
                "Invalid value received for argument `adv_ratio`. Expected a float in [0, 1]. "
                f"Received: adv_ratio={adv_ratio}"
            )
        if adv_training and (adv_eps is None) == (adv_snr_db is None):
            raise InputError(
                "Adversarial training needs exactly one of `adv_eps` or `adv_snr_db`. "
                f"Received: adv_eps={adv_eps}, adv_snr_db={adv_snr_db}"
            )
        if adv_eps is not None and adv_eps < 0:
            raise InputError(
                "Invalid value received for argument `adv_eps`. Expected a float >= 0. "
                f"Received: adv_eps={adv_eps}"
            )
        if smooth_gamma < 0:
            raise InputError(
                "Invalid value received for argument `smooth_gamma`. Expected a float >= 0. "
                f"Received: smooth_gamma={smooth_gamma}"
            )
        self.classifier = classifier
        self.adv_training = adv_training
        self.adv_ratio = float(adv_ratio)
        self.adv_eps = adv_eps
        self.adv_snr_db = adv_snr_db
        self.adv_loss_weight = float(adv_loss_weight)
        self.pgd_steps = int(pgd_steps)
        self.parseval_beta = float(parseval_beta)
        self.smooth_gamma = float(smooth_gamma)
        self.smooth_power = int(smooth_power)
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        if self.parseval_beta > 0:
            apply_parseval(classifier, self.parseval_beta, seed=seed)
        self.smooth_layers = None if smooth_layers is None else list(smooth_layers)
        self._features = None
        if self.smooth_gamma > 0:
            names = self.smooth_layers or default_smooth_layers(classifier)
            self._features = feature_model(classifier, names)
            self.smooth_tracker = keras.metrics.Mean(name="smooth_loss")

    def call(self, inputs, training=False):
        return self.classifier(inputs, training=training)

    def _adversarial(self, x, y):
        batch = ops.shape(x)[0]
        if self.adv_snr_db is not None:
            sigma = ops.mean(snr_eps(x, self.adv_snr_db))
            eps = truncated_normal_eps(sigma, batch, seed=self.seed_generator)
        else:
            eps = self.adv_eps
        if self.adv_training == "fgsm":
            return fgsm_perturb(self.classifier, x, y, eps, self.clip_min, self.clip_max)
        return pgd_perturb(
            self.classifier,
            x,
            y,
            eps,
            self.pgd_steps,
            None,
            self.clip_min,
            self.clip_max,
            seed=self.seed_generator,
        )

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        loss_weight, clean = sample_weight, None
        if self.adv_training and self.adv_ratio > 0:
            batch = ops.shape(x)[0]
            n_adv = ops.cast(ops.round(self.adv_ratio * ops.cast(batch, "float32")), "int32")
            is_adv = ops.arange(batch) < n_adv
            x_adv = ops.stop_gradient(self._adversarial(x, y))
            x = ops.where(ops.reshape(is_adv, (-1,) + (1,) * (len(x.shape) - 1)), x_adv, x)
            w = ops.where(is_adv, self.adv_loss_weight, 1.0)
            w = w / ops.mean(w)
            loss_weight = w if sample_weight is None else w * sample_weight
            clean = ops.logical_not(is_adv)
        with tf.GradientTape() as tape:
            if self._features is not None:
                outputs = self._features(x, training=True)
                y_pred = outputs[-1]
            else:
                y_pred = self.classifier(x, training=True)
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=loss_weight, training=True
            )
            if self._features is not None:
                smooth = laplacian_smoothness_penalty(
                    outputs[:-1], y, self.smooth_gamma, self.smooth_power, mask=clean
                )
                loss = loss + smooth
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            elif metric.name == "smooth_loss":
                metric.update_state(smooth)
            else:
                metric.update_state(y, y_pred, sample_weight=sample_weight)
        return self.get_metrics_result()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "classifier": keras.saving.serialize_keras_object(self.classifier),
                "adv_training": self.adv_training,
                "adv_ratio": self.adv_ratio,
                "adv_eps": self.adv_eps,
                "adv_snr_db": self.adv_snr_db,
                "adv_loss_weight": self.adv_loss_weight,
                "pgd_steps": self.pgd_steps,
                "parseval_beta": self.parseval_beta,
                "smooth_gamma": self.smooth_gamma,
                "smooth_power": self.smooth_power,
                "smooth_layers": self.smooth_layers,
                "clip_min": self.clip_min,
                "clip_max": self.clip_max,
                "seed": self.seed,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)
