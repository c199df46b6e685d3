"""The seed-001 attacks: images grown from Gaussian noise, and iteratively added noise.

Three experiments of the MNIST course assignment (seed document 001, section 4):
non-targeted generation (noise optimized until the model predicts a class), targeted
generation (the same with ``beta * MSE`` to an image of another class, ``beta = 1000``, so
it *looks* like that class but is predicted as the chosen one), and noise iteratively
added to an image until it is classified as a target, then re-used on other images.
"""

import numpy as np
import tensorflow as tf

from cnnvis_tf.attacks._common import (
    check_bool,
    check_nonneg,
    check_positive_int,
    finish,
    invalid,
    prepare,
)

__all__ = ["class_from_noise", "iterative_noise", "apply_noise"]


def class_from_noise(
    model_fn,
    classes,
    input_shape,
    *,
    like=None,
    beta=1000.0,
    steps=200,
    learning_rate=0.05,
    noise_mean=0.5,
    noise_std=0.1,
    seed=0,
    clip_min=0.0,
    clip_max=1.0,
):
    """Optimizes Gaussian-noise images until the model predicts each of ``classes``.

    Minimizes ``CE(model(img), class) + beta * mean((img - like)^2)`` with Adam (the MSE
    term only when ``like`` is given), keeping ``img`` in the box.

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
    classes = np.asarray(classes, np.int64).reshape(-1)
    shape = (len(classes),) + tuple(input_shape)
    rng = np.random.default_rng(seed)
    start = np.clip(rng.normal(noise_mean, noise_std, shape), clip_min, clip_max)
    model_fn, _, y, _ = prepare(model_fn, start.astype(np.float32), y=classes, targeted=True,
                                clip_min=clip_min, clip_max=clip_max)
    ref = None
    if like is not None:
        ref = np.broadcast_to(np.asarray(like, np.float32), shape)
        if not np.all(np.isfinite(ref)):
            raise invalid("like", "a finite image", "an array with NaN/Inf")
        ref = tf.constant(ref)
    img = tf.Variable(start.astype(np.float32))
    m, v = tf.zeros_like(img), tf.zeros_like(img)
    for t in range(1, steps + 1):
        with tf.GradientTape() as tape:
            logits = tf.cast(model_fn(img), tf.float32)
            loss = tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
            if ref is not None:
                axes = list(range(1, len(shape)))
                loss += float(beta) * tf.reduce_sum(tf.reduce_mean(tf.square(img - ref), axes))
        g = tape.gradient(loss, img)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * tf.square(g)
        step = learning_rate * (m / (1 - 0.9**t)) / (tf.sqrt(v / (1 - 0.999**t)) + 1e-8)
        img.assign(tf.clip_by_value(img - step, clip_min, clip_max))
    return finish(img, clip_min, clip_max)


def iterative_noise(
    model_fn,
    x,
    *,
    y=None,
    targeted=True,
    step_size=0.01,
    max_iter=100,
    clip_min=0.0,
    clip_max=1.0,
    from_probabilities=False,
):
    """Adds signed-gradient noise step by step until each image is classified as ``y``.

    Each image stops as soon as it reaches its target, so the noise is as small as this
    procedure finds; ``x_adv - x`` is the noise to re-use with :func:`apply_noise`.

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
        if not bool(tf.reduce_any(todo)):
            break
        mask = tf.reshape(tf.cast(todo, tf.float32), [-1] + [1] * (len(x.shape) - 1))
        step = float(step_size) * tf.sign(tape.gradient(loss, x_adv)) * mask
        x_adv = tf.clip_by_value(x_adv - step, clip_min, clip_max)
    return finish(x_adv, clip_min, clip_max)


def apply_noise(x, noise, *, clip_min=0.0, clip_max=1.0):
    """``clip(x + noise)``: re-uses noise found for one image on others (seed 001 fig. 16)."""
    return finish(np.asarray(x, np.float32) + np.asarray(noise, np.float32), clip_min, clip_max)
