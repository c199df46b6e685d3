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

Two recipes (``adv_recipe``):

- ``"standard"`` (default): per-*example* budgets ``|N(0, sigma)|`` truncated at ``2 sigma``
  (Kurakin et al.), ``sigma`` the mean SNR-matched budget of the current batch (after
  clipping, as ``attacks.snr_fgsm``); FGSM or PGD on a fraction ``adv_ratio`` of the batch;
  adversarial examples weighted ``adv_loss_weight`` (default 1).
- ``"seed002"``: seed 002's code exactly: FGSM with a *per-pixel* magnitude
  ``|clamp(N(0, sigma), -2 sigma, 2 sigma)|`` (clamped, not resampled) times the gradient's
  sign, the result clipped to the box; ``sigma`` is one number fixed before training,
  :func:`snr_sigma` of the data set (``||x|| / (10^(snr/20) sqrt(D))`` averaged over the
  images; the seed averaged it over the test set, we use the training split); the first half
  of every batch adversarial, the second clean; the loss
  ``(sum CE_adv + 0.3 sum CE_clean) / (n_adv + 0.3 n_clean)``, i.e. the adversarial half
  weighs ``adv_loss_weight = 1 / 0.3`` relative to the clean one (Kurakin et al. put the 0.3
  on the adversarial examples; the seed's code puts it on the clean ones).
"""

import math

import keras
import numpy as np
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

__all__ = ["DefenseModel", "truncated_normal_eps", "snr_sigma", "seed002_magnitudes",
           "ADV_RECIPES", "SEED002_ADV_LOSS_WEIGHT", "default_adv_loss_weight"]

ADV_METHODS = ("fgsm", "pgd")
ADV_RECIPES = ("standard", "seed002")
# Seed 002's code: loss = (50 CE(adv half) + 50 * 0.3 CE(clean half)) / (50 + 50 * 0.3).
SEED002_CLEAN_WEIGHT = 0.3
SEED002_ADV_LOSS_WEIGHT = 1.0 / SEED002_CLEAN_WEIGHT
SMOOTH_WEIGHTINGS = ("seed002", "gamma")
_SEED_STATE = "seed_generator_state"


def truncated_normal_eps(sigma, batch_size, seed=None):
    """``|N(0, sigma)|`` truncated at ``2 sigma``: per-example budgets of seed 002 §3.1."""
    return ops.abs(keras.random.truncated_normal((batch_size,), stddev=1.0, seed=seed)) * sigma


def default_adv_loss_weight(adv_recipe="standard"):
    """The weight of adversarial examples in the loss when none is given: 1 (standard) or
    seed 002's ``1 / 0.3`` (its clean half weighs 0.3)."""
    return SEED002_ADV_LOSS_WEIGHT if adv_recipe == "seed002" else 1.0


# Seed 002, section 3.1 and its code (test_adversarial_svhn.py: ``diff_limit``).
def snr_sigma(x, snr_db, batch_size=4096) -> float:
    """Seed 002's sigma: the mean over images of the FGSM step ``eps`` that gives
    ``snr_db``, ``||x_i||_2 / (10^(snr_db/20) sqrt(D))`` (``D`` entries per image, the
    unclipped sign-step formula), computed once over a whole data set in float64 batches.

    Raises:
      InputError: empty ``x`` or a bad ``snr_db``.
    """
    snr_db = check_positive("snr_db", snr_db)
    n = len(x)
    if n == 0:
        raise InputError("snr_sigma needs at least one image; received an empty array.")
    d = int(np.prod(np.shape(x)[1:]))
    total = 0.0
    for i in range(0, n, int(batch_size)):
        b = np.asarray(x[i : i + int(batch_size)], np.float64).reshape(-1, d)
        total += float(np.sqrt((b**2).sum(axis=1)).sum())
    return total / n / (10.0 ** (snr_db / 20.0) * math.sqrt(d))


def seed002_magnitudes(shape, sigma, seed=None):
    """Per-pixel FGSM magnitudes of seed 002's code: ``|clamp(N(0, sigma), -2 sigma,
    2 sigma)|`` (clamped to the bound, not redrawn), one per entry of ``shape``."""
    noise = keras.random.normal(shape, stddev=1.0, seed=seed)
    return ops.abs(ops.clip(noise, -2.0, 2.0)) * sigma


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
        weights are renormalized to mean 1. ``None``: the recipe's (1, or ``1 / 0.3`` for
        ``"seed002"``).
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
      adv_recipe: ``"standard"`` or ``"seed002"`` (see the module docstring); ``"seed002"``
        needs ``adv_training="fgsm"``, ``adv_sigma``, ``adv_ratio=0.5`` and no ``adv_eps``.
      adv_sigma: ``"seed002"``: the std of the per-pixel magnitudes, fixed before training
        (:func:`snr_sigma` of the training images at ``adv_snr_db``).
      **kwargs: base ``keras.Model`` arguments.
    """

    def __init__(
        self,
        classifier,
        adv_training=None,
        adv_ratio=0.5,
        adv_eps=None,
        adv_snr_db=None,
        adv_loss_weight=None,
        pgd_steps=7,
        parseval_beta=0.0,
        smooth_gamma=0.0,
        smooth_power=1,
        smooth_layers=None,
        clip_min=0.0,
        clip_max=1.0,
        seed=None,
        smooth_weighting="seed002",
        adv_recipe="standard",
        adv_sigma=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if adv_loss_weight is None:
            adv_loss_weight = default_adv_loss_weight(adv_recipe)
        self.adv_recipe, self.adv_sigma = self._check_recipe(
            adv_recipe, adv_training, adv_sigma, adv_eps, adv_ratio)
        if smooth_weighting not in SMOOTH_WEIGHTINGS:
            raise invalid("smooth_weighting", "'seed002' (gamma ** m) or 'gamma'",
                          smooth_weighting)
        self.smooth_weighting = smooth_weighting
        if not isinstance(classifier, keras.Model):
            raise invalid("classifier", "a keras.Model mapping inputs to logits", classifier)
        if adv_training not in (None,) + ADV_METHODS:
            raise invalid("adv_training", "None, 'fgsm' or 'pgd'", adv_training)
        if adv_training and self.adv_recipe == "standard" and (
                (adv_eps is None) == (adv_snr_db is None)):
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

    @staticmethod
    def _check_recipe(adv_recipe, adv_training, adv_sigma, adv_eps, adv_ratio):
        """``(adv_recipe, adv_sigma)`` checked: seed 002's recipe is FGSM on half of each
        batch with a fixed sigma; returns sigma as a float (None for "standard")."""
        if adv_recipe not in ADV_RECIPES:
            raise invalid("adv_recipe", "'standard' or 'seed002'", adv_recipe)
        if adv_recipe == "standard" or adv_training in (None, "", "none"):
            if adv_sigma is not None:
                check_positive("adv_sigma", adv_sigma)
            return adv_recipe, None if adv_sigma is None else float(adv_sigma)
        if adv_training != "fgsm":
            raise InputError("adv_recipe='seed002' is seed 002's FGSM recipe; it needs "
                             f"adv_training='fgsm'. Received: adv_training={adv_training!r}")
        if adv_eps is not None:
            raise InputError("adv_recipe='seed002' draws per-pixel magnitudes from "
                             "N(0, adv_sigma) (sigma matched to adv_snr_db); it takes no "
                             f"adv_eps. Received: adv_eps={adv_eps!r}")
        if adv_sigma is None:
            raise InputError("adv_recipe='seed002' needs adv_sigma, the per-pixel std matched "
                             "to the SNR over the data set: adv_sigma=snr_sigma(x_train, 33).")
        if isinstance(adv_ratio, bool) or not isinstance(adv_ratio, (int, float)) or \
                float(adv_ratio) != 0.5:
            raise InputError("adv_recipe='seed002' trains on half adversarial, half clean "
                             f"batches; adv_ratio must be 0.5. Received: adv_ratio={adv_ratio!r}"
                             " (use adv_recipe='standard' for another ratio).")
        return adv_recipe, check_positive("adv_sigma", adv_sigma)

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
        the PGD start; for ``adv_recipe="seed002"`` the per-pixel magnitudes
        (:func:`seed002_magnitudes` of ``adv_sigma``) along the gradient's sign.
        """
        x = tf.convert_to_tensor(x)
        box = {"clip_min": self.clip_min, "clip_max": self.clip_max}
        if self.adv_recipe == "seed002":  # per-pixel magnitudes along sign(grad), clipped
            direction = _steps.direction(_steps.loss_gradient(self._logits, x, y))
            step = seed002_magnitudes(ops.shape(x), self.adv_sigma, self.seed_generator)
            return _steps.fgm_step(x, ops.cast(step, x.dtype) * direction, 1.0, **box)
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

    def training_batch(self, x, y, sample_weight=None):
        """The batch ``train_step`` fits: ``(x, loss weights, clean mask)``.

        With adversarial training the first ``round(adv_ratio * N)`` examples are replaced
        by :meth:`adversarial_examples` and weighted ``adv_loss_weight`` against 1 for the
        clean ones, the weights renormalized to mean 1, so the loss is
        ``(lambda sum CE_adv + sum CE_clean) / (lambda n_adv + n_clean)`` (for ``"seed002"``,
        ``lambda = 1 / 0.3``: seed 002's ``(sum CE_adv + 0.3 sum CE_clean) / (n_adv + 0.3
        n_clean)``). Without it: ``(x, sample_weight, None)``.
        """
        if not (self.adv_training and self.adv_ratio > 0):
            return x, sample_weight, None
        batch = ops.shape(x)[0]
        n_adv = ops.cast(ops.round(self.adv_ratio * ops.cast(batch, "float32")), "int32")
        is_adv = ops.arange(batch) < n_adv
        x_adv = ops.stop_gradient(self.adversarial_examples(x, y))
        x = ops.where(ops.reshape(is_adv, (-1,) + (1,) * (len(x.shape) - 1)), x_adv, x)
        w = ops.where(is_adv, self.adv_loss_weight, 1.0)
        w = w / ops.mean(w)
        loss_weight = w if sample_weight is None else w * sample_weight
        return x, loss_weight, ops.logical_not(is_adv)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, loss_weight, clean = self.training_batch(x, y, sample_weight)
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
                "adv_recipe": self.adv_recipe,
                "adv_sigma": self.adv_sigma,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["classifier"] = keras.saving.deserialize_keras_object(config["classifier"])
        return cls(**config)
