"""Adversarial training, combinable with Parseval and Laplacian smoothness regularization.

:class:`DefenseModel` wraps a functional classifier and replaces ``train_step``: a fraction
``adv_ratio`` of each batch is replaced by FGSM or PGD examples made on the fly (inside the
step, with ``tf.GradientTape``) against the current weights; the loss adds the smoothness
penalty on the clean part of the batch; Parseval retraction runs through the kernel
constraints after each optimizer step. Compile and ``fit`` the wrapper, then save
``wrapper.classifier`` (the plain functional model).

The adversarial examples come from the package's one kernel (:mod:`cnnvis_tf.attacks._steps`),
the code behind ``attacks.fgsm``, ``attacks.pgd`` and ``attacks.snr_fgsm``: same FGSM step,
same PGD start, step size ``min(eps, 2.5 eps / steps)``, projection and seeding (the first
PGD batch of ``DefenseModel(seed=s)`` equals ``attacks.pgd(..., seed=s)``), and the same
SNR convention (the perturbation *after clipping* has the SNR).

References:
  Goodfellow, Shlens and Szegedy. "Explaining and harnessing adversarial examples." 2015.
  Kurakin, Goodfellow and Bengio. "Adversarial machine learning at scale." ICLR 2017
  (mixing k adversarial examples per batch, per-example eps from a truncated normal).
  Madry et al. "Towards deep learning models resistant to adversarial attacks." ICLR 2018.
  Seed 002 section 3.1 (sigma matched to an SNR of 33 dB), section 4.2.2 (smoothness on the
  non-augmented part of the batch).
"""

import math

import keras
import tensorflow as tf
from keras import ops

from cnnvis_tf.attacks import _steps
from cnnvis_tf.checks import (
    check_fraction,
    check_nonneg,
    check_positive,
    check_positive_int,
    invalid,
)
from cnnvis_tf.errors import InputError
from cnnvis_tf.layers.constraints import apply_parseval, check_seed
from cnnvis_tf.layers.smoothness import (
    default_smooth_layers,
    feature_model,
    laplacian_smoothness_penalty,
)

__all__ = ["DefenseModel", "truncated_normal_eps"]

ADV_METHODS = ("fgsm", "pgd")
SMOOTH_WEIGHTINGS = ("seed002", "gamma")
_SEED_STATE = "seed_generator_state"


def truncated_normal_eps(sigma, batch_size, seed=None):
    """``|N(0, sigma)|`` truncated at ``2 sigma``: per-example budgets of seed 002 §3.1."""
    return ops.abs(keras.random.truncated_normal((batch_size,), stddev=1.0, seed=seed)) * sigma


def _check_finite(name, value):
    """``value`` as a float; raises unless it is a finite number (not a string)."""
    try:
        ok = not isinstance(value, (bool, str, bytes)) and math.isfinite(float(value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise invalid(name, "a finite number", value)
    return float(value)



@keras.saving.register_keras_serializable(package="cnnvis_tf")
class DefenseModel(keras.Model):
    """A training wrapper around a classifier: adversarial training + regularizers.

    Args:
      classifier: functional model mapping inputs in ``[clip_min, clip_max]`` to logits.
      adv_training: ``None`` (off), ``"fgsm"`` or ``"pgd"``.
      adv_ratio: fraction of each batch replaced by adversarial examples, in [0, 1].
      adv_eps: fixed L-inf budget (input units). Exclusive with ``adv_snr_db``.
      adv_snr_db: per-example budgets ``|N(0, sigma)|`` truncated at ``2 sigma`` with
        ``sigma`` the mean FGSM budget that gives this SNR (after clipping, as
        ``attacks.snr_fgsm``) on the current clean batch.
      adv_loss_weight: weight ``lambda`` of adversarial examples in the loss (Kurakin et al.);
        weights are renormalized to mean 1.
      pgd_steps: PGD iterations (step size ``min(eps, 2.5 eps / pgd_steps)``).
      parseval_beta: if > 0, :func:`apply_parseval` is applied to ``classifier``; in
        [0, 1) (the retraction diverges for ``beta >= 1``).
      smooth_gamma: weight of :func:`laplacian_smoothness_penalty` (0 disables it).
      smooth_power: Laplacian power ``m``.
      smooth_layers: layer names for the penalty; ``None``: all ``*_relu``/``*_out``.
      smooth_weighting: ``"seed002"`` (default): the penalty is weighted by
        ``smooth_gamma ** smooth_power`` as in seed 002's code; ``"gamma"``: by
        ``smooth_gamma`` (Lassance et al.'s code).
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
        smooth_weighting="seed002",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if smooth_weighting not in SMOOTH_WEIGHTINGS:
            raise invalid("smooth_weighting", "'seed002' (gamma ** m) or 'gamma'",
                          smooth_weighting)
        self.smooth_weighting = smooth_weighting
        if not isinstance(classifier, keras.Model):
            raise invalid("classifier", "a keras.Model mapping inputs to logits", classifier)
        if adv_training not in (None,) + ADV_METHODS:
            raise invalid("adv_training", "None, 'fgsm' or 'pgd'", adv_training)
        if adv_training and (adv_eps is None) == (adv_snr_db is None):
            raise InputError(
                "Adversarial training needs exactly one of `adv_eps` or `adv_snr_db`. "
                f"Received: adv_eps={adv_eps}, adv_snr_db={adv_snr_db}"
            )
        settings = self._check_settings(
            adv_ratio=adv_ratio, adv_eps=adv_eps, adv_snr_db=adv_snr_db,
            adv_loss_weight=adv_loss_weight, pgd_steps=pgd_steps, parseval_beta=parseval_beta,
            smooth_gamma=smooth_gamma, smooth_power=smooth_power, smooth_layers=smooth_layers,
            clip_min=clip_min, clip_max=clip_max, seed=seed,
        )
        self.classifier = classifier
        self.adv_training = adv_training
        for key, value in settings.items():  # adv_ratio, ..., clip_min, clip_max, seed
            setattr(self, key, value)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        if self.parseval_beta > 0:
            apply_parseval(classifier, self.parseval_beta, seed=self.seed)
        self._features = None
        if self.smooth_gamma > 0:
            names = self.smooth_layers or default_smooth_layers(classifier)
            self._features = feature_model(classifier, names)
            self.smooth_tracker = keras.metrics.Mean(name="smooth_loss")
        # The wrapper owns no weights of its own: it is built when its classifier is. Keras
        # builds the optimizer on load (``compile_from_config``) only for a built model, so
        # without this a wrapper saved after ``fit`` without validation data (``train_step``
        # never calls ``self``) reloaded with an empty optimizer and lost its state.
        if getattr(classifier, "built", False):
            self.built = True

    def build(self, input_shape=None):
        if not self.classifier.built:
            self.classifier.build(input_shape)

    @staticmethod
    def _check_settings(*, adv_ratio, adv_eps, adv_snr_db, adv_loss_weight, pgd_steps,
                        parseval_beta, smooth_gamma, smooth_power, smooth_layers, clip_min,
                        clip_max, seed):
        """Every numeric setting checked (Keras-style errors); returns them normalized."""
        lo, hi = _check_finite("clip_min", clip_min), _check_finite("clip_max", clip_max)
        if lo >= hi:
            raise invalid("clip_max", f"a number > clip_min={lo}", clip_max)
        if smooth_layers is not None and (
            isinstance(smooth_layers, str) or not all(isinstance(s, str) for s in smooth_layers)
        ):
            raise invalid("smooth_layers", "None or a list of layer names", smooth_layers)
        return {
            "adv_ratio": check_fraction("adv_ratio", adv_ratio),
            "adv_eps": None if adv_eps is None else check_nonneg("adv_eps", adv_eps),
            "adv_snr_db": None if adv_snr_db is None else check_positive("adv_snr_db",
                                                                          adv_snr_db),
            "adv_loss_weight": check_nonneg("adv_loss_weight", adv_loss_weight),
            "pgd_steps": check_positive_int("pgd_steps", pgd_steps),
            "parseval_beta": check_fraction("parseval_beta", parseval_beta, high_open=True),
            "smooth_gamma": check_nonneg("smooth_gamma", smooth_gamma),
            "smooth_power": check_positive_int("smooth_power", smooth_power),
            "smooth_layers": None if smooth_layers is None else list(smooth_layers),
            "clip_min": lo,
            "clip_max": hi,
            "seed": check_seed(seed),
        }

    def call(self, inputs, training=False):
        return self.classifier(inputs, training=training)

    def _logits(self, x):
        return self.classifier(x, training=False)

    def adversarial_examples(self, x, y):
        """The adversarial batch ``train_step`` trains on (all of it; the step keeps the first
        ``adv_ratio``), from the kernel of :mod:`cnnvis_tf.attacks`; graph-safe.

        Draws from ``self.seed_generator``: SNR budgets first (when ``adv_snr_db``), then
        the PGD start.
        """
        x = tf.convert_to_tensor(x)
        box = {"clip_min": self.clip_min, "clip_max": self.clip_max}
        direction = None
        if self.adv_snr_db is not None:
            direction = _steps.direction(_steps.loss_gradient(self._logits, x, y))
            sigma = ops.mean(_steps.snr_eps(x, direction, self.adv_snr_db, **box))
            eps = truncated_normal_eps(sigma, ops.shape(x)[0], seed=self.seed_generator)
        else:
            eps = self.adv_eps
        if self.adv_training == "fgsm":
            if direction is None:
                direction = _steps.direction(_steps.loss_gradient(self._logits, x, y))
            return _steps.fgm_step(x, direction, eps, **box)
        return _steps.pgd(self._logits, x, y, eps, nb_iter=self.pgd_steps,
                          seed=self.seed_generator, **box)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        loss_weight, clean = sample_weight, None
        if self.adv_training and self.adv_ratio > 0:
            batch = ops.shape(x)[0]
            n_adv = ops.cast(ops.round(self.adv_ratio * ops.cast(batch, "float32")), "int32")
            is_adv = ops.arange(batch) < n_adv
            x_adv = ops.stop_gradient(self.adversarial_examples(x, y))
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
                weight = (self.smooth_gamma ** self.smooth_power
                          if self.smooth_weighting == "seed002" else self.smooth_gamma)
                smooth = laplacian_smoothness_penalty(
                    outputs[:-1], y, weight, self.smooth_power, mask=clean
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

    def save_own_variables(self, store):
        # The random stream (SNR budgets, PGD starts) resumes where it was, not at `seed`.
        super().save_own_variables(store)
        store[_SEED_STATE] = ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        keys = list(store.keys())
        if _SEED_STATE in keys:  # files written before it was saved have no such entry
            self.seed_generator.state.assign(store[_SEED_STATE])
            store = {k: store[k] for k in keys if k != _SEED_STATE}
        super().load_own_variables(store)

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
                "smooth_weighting": self.smooth_weighting,
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
