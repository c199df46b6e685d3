"""The seed-001 attacks: images grown from Gaussian noise, and iteratively added noise.

Three experiments of the MNIST course assignment (seed document 001, section 4):
non-targeted generation (noise optimized until the model predicts a class), targeted
generation (the same with ``beta * MSE`` to an image of another class, ``beta = 1000``, so
it *looks* like that class but is predicted as the chosen one), and noise iteratively
added to an image until it is classified as a target, then re-used on other images.
"""

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf.attacks._common import (
    check_bool,
    check_nonneg,
    check_positive_int,
    finish,
    invalid,
    prepare,
)
from cnnvis_tf.checks import check_fraction

__all__ = ["class_from_noise", "iterative_noise", "apply_noise", "transfer_rate", "noise_start",
           "SCHEDULES"]


SCHEDULES = ("constant", "anneal")


def noise_start(shape: Sequence[int], noise_mean: float = 0.5, noise_std: float = 0.1,
                seed: int = 0, clip_min: float = 0.0, clip_max: float = 1.0) -> np.ndarray:
    """The Gaussian images :func:`class_from_noise` starts from (float32, in the box)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(noise_mean, noise_std, shape), clip_min, clip_max).astype(
        np.float32)


def class_from_noise(
    model_fn: Callable,
    classes: ArrayLike,
    input_shape: Sequence[int],
    *,
    like: ArrayLike | None = None,
    beta: float = 1000.0,
    steps: int = 300,
    learning_rate: float = 0.01,
    noise_mean: float = 0.5,
    noise_std: float = 0.1,
    seed: int = 0,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    schedule: str = "anneal",
    confidence: float = 0.9,
    warmup: float = 0.2,
):
    """Optimizes Gaussian-noise images until the model predicts each of ``classes``.

    Minimizes ``CE(model(img), class) + beta_t * mean((img - like)^2)`` with Adam (the MSE
    term only when ``like`` is given), keeping ``img`` in the box.

    ``schedule="constant"`` is seed 001's loss as written: ``beta_t = beta`` throughout, the
    last iterate returned. At ``beta = 1000`` its minimum can sit on ``like`` itself: the MSE
    gradient ``2 beta / D (img - like)`` outweighs the cross-entropy's on a model with small
    logits, and no target is reached (0 of 9 on a 1-epoch MNIST CNN). ``schedule="anneal"``
    (default) reaches the targets and then moves towards ``like``: ``beta_t = 0`` for the
    first ``warmup`` fraction of the steps (the plain attack), then ``beta ** s`` with ``s``
    rising linearly from 0 to 1 (from 1 to ``beta``, geometrically); each image returned is
    the iterate closest to ``like`` (MSE) among those the model classifies as its target
    with probability >= ``confidence`` (the last iterate if none was). Without ``like`` there
    is no MSE term and the schedule does not matter: the last iterate is returned.

    Args:
      model_fn: callable mapping a batch to logits.
      classes: one class per image to generate.
      input_shape: shape of one image.
      like: optional image (or one per class) the results should look like.
      beta: weight of the MSE term (seed 001 uses 1000).
      steps: Adam steps.
      learning_rate: Adam step size.
      noise_mean, noise_std: the Gaussian the images start from (clipped to the box).
      seed: seed of the starting noise.
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      schedule: ``"anneal"`` or ``"constant"`` (used with ``like``).
      confidence: ``"anneal"``: the target probability an iterate must have to be kept.
      warmup: ``"anneal"``: fraction of the steps run with ``beta_t = 0``.

    Returns:
      float32 numpy array of shape ``(len(classes),) + input_shape``.

    Raises:
      InputError: bad arguments.

    References:
      Seed document 001, sections 4.1-4.2; Simonyan, Vedaldi, Zisserman. Deep Inside
      Convolutional Networks. ICLR 2014 workshop (class-model optimization).
    """
    steps = check_positive_int("steps", steps)
    check_nonneg("beta", beta)
    check_nonneg("learning_rate", learning_rate)
    if schedule not in SCHEDULES:
        raise invalid("schedule", "'constant' or 'anneal'", schedule)
    confidence = check_fraction("confidence", confidence)
    warmup = check_fraction("warmup", warmup, high_open=True)
    if like is None:
        schedule = "constant"  # no MSE term: nothing to anneal
    classes = np.asarray(classes, np.int64).reshape(-1)
    shape = (len(classes),) + tuple(input_shape)
    start = noise_start(shape, noise_mean, noise_std, seed, clip_min, clip_max)
    model_fn, _, y, _ = prepare(model_fn, start, y=classes, targeted=True,
                                clip_min=clip_min, clip_max=clip_max)
    ref = tf.zeros(shape, tf.float32)
    if like is not None:
        ref = np.broadcast_to(np.asarray(like, np.float32), shape)
        if not np.all(np.isfinite(ref)):
            raise invalid("like", "a finite image", "an array with NaN/Inf")
        ref = tf.constant(ref)
    axes = list(range(1, len(shape)))

    @tf.function(reduce_retracing=True)
    def step(img, m, v, t, weight):
        with tf.GradientTape() as tape:
            tape.watch(img)
            logits = tf.cast(model_fn(img), tf.float32)
            mse = tf.reduce_mean(tf.square(img - ref), axes)
            loss = tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
            loss += weight * tf.reduce_sum(mse)
        g = tape.gradient(loss, img)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * tf.square(g)
        update = learning_rate * (m / (1 - 0.9**t)) / (tf.sqrt(v / (1 - 0.999**t)) + 1e-8)
        prob = tf.gather(tf.nn.softmax(logits), y, batch_dims=1)
        hit = tf.equal(tf.argmax(logits, axis=1), y)
        return tf.clip_by_value(img - update, clip_min, clip_max), m, v, prob, hit, mse

    img = tf.constant(start)
    m, v = tf.zeros_like(img), tf.zeros_like(img)
    best, best_mse = img.numpy(), np.full(len(classes), np.inf)
    use_beta = like is not None
    for t in range(1, steps + 1):
        weight = float(beta) if use_beta else 0.0
        if schedule == "anneal":
            done = (t - 1) / steps
            weight = 0.0 if done < warmup else float(beta) ** ((done - warmup) / (1 - warmup))
        new, m, v, prob, hit, mse = step(img, m, v, tf.constant(float(t)),
                                         tf.constant(weight, tf.float32))
        if schedule == "anneal":  # keep the closest iterate that is its target (confidently)
            keep = hit.numpy() & (prob.numpy() >= confidence) & (mse.numpy() < best_mse)
            best[keep], best_mse[keep] = img.numpy()[keep], mse.numpy()[keep]
        img = new
    if schedule == "anneal":
        logits = tf.cast(model_fn(img), tf.float32)
        prob = tf.gather(tf.nn.softmax(logits), y, batch_dims=1).numpy()
        mse = tf.reduce_mean(tf.square(img - ref), axes).numpy()
        keep = (tf.argmax(logits, axis=1).numpy() == classes) & (prob >= confidence) & (
            mse < best_mse)
        best[keep], best_mse[keep] = img.numpy()[keep], mse[keep]
        last = ~np.isfinite(best_mse)
        best[last] = img.numpy()[last]
        return finish(best, clip_min, clip_max)
    return finish(img, clip_min, clip_max)


def iterative_noise(
    model_fn: Callable,
    x: ArrayLike,
    *,
    y: ArrayLike | None = None,
    targeted: bool = True,
    step_size: float = 0.01,
    max_iter: int = 100,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    from_probabilities: bool = False,
    confidence: float | None = None,
) -> np.ndarray:
    """Adds signed-gradient noise step by step until each image is classified as ``y``.

    Each image stops as soon as it reaches its target (with probability >= ``confidence``
    when given), so the noise is as small as this procedure finds; ``x_adv - x`` is the
    noise to re-use with :func:`apply_noise`.

    Args:
      model_fn: callable mapping a batch to logits.
      x: batch of inputs in ``[clip_min, clip_max]``.
      y: target classes.
      targeted: must be True.
      step_size: L-inf size of each added noise step.
      max_iter: maximum number of steps.
      clip_min: lower bound of the input space.
      clip_max: upper bound of the input space.
      from_probabilities: ``model_fn`` outputs softmax probabilities instead of logits.
      confidence: keep adding noise until the target's softmax probability reaches this
        (in [0, 1]); None: until the target is the predicted class.

    Returns:
      float32 numpy array, the noisy images.

    Raises:
      InputError: bad arguments or inputs.

    References:
      Seed document 001, section 4.3; Goodfellow, Shlens, Szegedy. Explaining and Harnessing
      Adversarial Examples. ICLR 2015.
    """
    if not check_bool("targeted", targeted):
        raise invalid("targeted", "True (noise is added towards a target; pass y=<targets>)",
                      targeted)
    max_iter = check_positive_int("max_iter", max_iter)
    if confidence is not None:
        confidence = check_fraction("confidence", confidence)
    model_fn, x, y, _ = prepare(model_fn, x, y=y, targeted=True, clip_min=clip_min,
                                clip_max=clip_max, from_probabilities=from_probabilities,
                                step_size=step_size)
    x_adv = tf.identity(x)
    for _ in range(max_iter):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            logits = model_fn(x_adv)
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        todo = tf.not_equal(tf.argmax(logits, axis=1), y)
        if confidence is not None:
            prob = tf.gather(tf.nn.softmax(tf.cast(logits, tf.float32)), y, batch_dims=1)
            todo = tf.logical_or(todo, prob < confidence)
        if not bool(tf.reduce_any(todo)):
            break
        mask = tf.reshape(tf.cast(todo, tf.float32), [-1] + [1] * (len(x.shape) - 1))
        step = float(step_size) * tf.sign(tape.gradient(loss, x_adv)) * mask
        x_adv = tf.clip_by_value(x_adv - step, clip_min, clip_max)
    return finish(x_adv, clip_min, clip_max)


def apply_noise(x: ArrayLike, noise: ArrayLike, *, clip_min: float = 0.0,
                clip_max: float = 1.0) -> np.ndarray:
    """``clip(x + noise)``: re-uses noise found for one image on others (seed 001 fig. 16)."""
    return finish(np.asarray(x, np.float32) + np.asarray(noise, np.float32), clip_min, clip_max)


def transfer_rate(pred_noisy: ArrayLike, target: int, y: ArrayLike | None = None) -> float:
    """Seed 001's noise reuse (fig. 16): the fraction of images classified as ``target``
    once another image's noise is added, counting only images whose true label ``y`` is
    not ``target`` (all when ``y`` is None). NaN when no image counts."""
    pred_noisy = np.asarray(pred_noisy).reshape(-1)
    counted = np.ones(len(pred_noisy), bool) if y is None else np.asarray(y).reshape(-1) != target
    if not counted.any():
        return float("nan")
    return float(np.mean(pred_noisy[counted] == target))
