"""Neural style transfer on the run's own network: optimization (Gatys) and a feed-forward
transformer network trained with the same perceptual losses (Johnson).

Style of an image: the Gram matrices G_l = F_l^T F_l / (h w) of the activations F_l of the
style layers; content: the activations of the content layer. Both losses are relative
squared errors, ||G_l(x) - G_l(s)||^2 / ||G_l(s)||^2 summed over layers and
||F(x) - F(c)||^2 / ||F(c)||^2, so their weights do not depend on the network's scale.

References:
  Gatys, L. A., Ecker, A. S. and Bethge, M. Image Style Transfer Using Convolutional
  Neural Networks. CVPR 2016.
  Johnson, J., Alahi, A. and Fei-Fei, L. Perceptual Losses for Real-Time Style Transfer
  and Super-Resolution. ECCV 2016.
"""

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf.checks import check_nonneg, check_positive, check_positive_int, invalid
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model
from cnnvis_tf.vis.inversion import total_variation


def gram(f: tf.Tensor) -> tf.Tensor:
    """Gram matrices (N, C, C) of activations (N, h, w, C), normalized by h * w."""
    n, c = tf.shape(f)[0], tf.shape(f)[-1]
    v = tf.reshape(f, (n, -1, c))
    return tf.matmul(v, v, transpose_a=True) / tf.cast(tf.shape(v)[1], f.dtype)


def _rel(a, b):
    axes = list(range(1, len(a.shape)))
    return tf.reduce_sum((a - b) ** 2, axis=axes) / (tf.reduce_sum(b**2, axis=axes) + 1e-8)


class _Perceptual(_model.Visualizer):
    """Style (Gram) and content losses on spatial layers of the model.

    Args:
      model: any Keras classifier with convolutions.
      style_layers: spatial layers for the style (``None``: every conv's activation).
      content_layer: the content layer (``None``: the last style layer).
      clip_min, clip_max: the model's input range.
    """

    def __init__(self, model, style_layers=None, content_layer=None, *, clip_min=0.0,
                 clip_max=1.0):
        super().__init__(model, clip_min=clip_min, clip_max=clip_max)
        r = self.resolved
        self.style_layers = list(style_layers or [r.activation_layer(c)
                                                  for c in r.conv_layers()])
        if not self.style_layers:
            r.last_conv_layer()  # raises the no-conv error
        self.content_layer = content_layer or self.style_layers[-1]
        for name in self.style_layers + [self.content_layer]:
            _model.spatial_layer(r, name, type(self).__name__)
        self._net = r.keras_model(self.style_layers + [self.content_layer], logits=False)

    def _outputs(self, x):
        outs = self._net(x, training=False)
        return [gram(f) for f in outs[:-1]], outs[-1]

    def targets(self, style, content):
        """(style Grams of the one image ``style``, content features of ``content``)."""
        s = self.images(style, "style")[:1]
        grams, _ = self._outputs(tf.constant(s))
        _, feats = self._outputs(tf.constant(self.images(content, "content")))
        return grams, feats

    def losses(self, x, style_grams, content_feats):
        """(style loss, content loss) per image of ``x``."""
        grams, feats = self._outputs(x)
        style = tf.add_n([_rel(g, t) for g, t in zip(grams, style_grams)])
        return style, _rel(feats, content_feats)

    def style_loss(self, x, style):
        """Numpy style loss of each image of ``x`` against the style image."""
        x = self.images(x)
        grams, _ = self.targets(style, x[:1])
        return self.losses(tf.constant(x), grams, self._outputs(tf.constant(x))[1])[0].numpy()


class NeuralStyle(_Perceptual):
    """Gatys et al.: optimizes the image for the content of one image and the style of
    another (Adam, in the input range)."""

    def __call__(self, content: ArrayLike, style: ArrayLike, steps: int = 100,
                 style_weight: float = 1.0, content_weight: float = 0.2, tv_weight: float = 0.05,
                 learning_rate: float = 0.02, init: str = "content",
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Stylizes the image(s) ``content`` with the image ``style``.

        Args:
          init: ``"content"`` (start at the content image) or ``"noise"`` (Gatys' start).

        Returns:
          (images, history): float32 (N, H, W, C) and (steps + 1, 2) mean style and
          content loss, the first row at the starting image.
        """
        content = self.images(content, "content")
        steps = check_positive_int("steps", steps)
        ws, wc, wt = (check_nonneg(n, v) for n, v in (
            ("style_weight", style_weight), ("content_weight", content_weight),
            ("tv_weight", tv_weight)))
        if init not in ("content", "noise"):
            raise invalid("init", "'content' or 'noise'", init)
        grams, feats = self.targets(style, content)
        start = content if init == "content" else np.random.default_rng(seed).uniform(
            self.clip_min, self.clip_max, content.shape).astype("float32")
        var = tf.Variable(start)
        opt = keras.optimizers.Adam(check_positive("learning_rate", learning_rate))

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                s, c = self.losses(var, grams, feats)
                loss = tf.reduce_sum(ws * s + wc * c + wt * total_variation(var))
            opt.apply_gradients([(tape.gradient(loss, var), var)])
            var.assign(tf.clip_by_value(var, self.clip_min, self.clip_max))
            return tf.stack([tf.reduce_mean(s), tf.reduce_mean(c)])

        history = [step().numpy() for _ in range(steps)]
        s, c = self.losses(var, grams, feats)
        history.append([float(tf.reduce_mean(s)), float(tf.reduce_mean(c))])
        return var.numpy(), np.asarray(history, "float32")


def _transformer(shape, seed):
    """conv -> stride-2 conv -> residual block -> upsample + conv -> conv: a per-pixel
    change ``z`` (logit units; upsampling + conv avoids checkerboard artefacts)."""
    init = keras.initializers.GlorotUniform(seed=seed)

    def conv(z, f, **kw):
        return keras.layers.Conv2D(f, 3, padding="same", kernel_initializer=init, **kw)(z)

    inp = keras.Input(shape, name="image")
    z = conv(inp, 16, activation="relu")
    z = conv(z, 32, strides=2, activation="relu")
    z = keras.layers.Add()([z, conv(conv(z, 32, activation="relu"), 32)])
    z = conv(keras.layers.UpSampling2D(2)(z), 16, activation="relu")
    if tuple(z.shape[1:3]) != tuple(shape[:2]):
        z = keras.layers.Resizing(shape[0], shape[1])(z)
    z = keras.layers.Concatenate()([z, inp])
    out = keras.layers.Conv2D(shape[-1], 3, padding="same", kernel_initializer="zeros")(z)
    return keras.Model(inp, out, name="transformer")


class FastStyleTransfer(_Perceptual):
    """Johnson et al.: a feed-forward transformer network trained once per style with the
    perceptual losses of :class:`NeuralStyle`; stylizing is then one forward pass."""

    transformer = None

    def _stylize(self, x, training=False):
        """lo + (hi - lo) sigmoid(logit(x01) + z(x)): the identity at initialization (z = 0)."""
        span = self.clip_max - self.clip_min
        p = tf.clip_by_value((x - self.clip_min) / span, 0.02, 0.98)
        z = self.transformer(x, training=training)
        return self.clip_min + span * tf.sigmoid(tf.math.log(p / (1 - p)) + z)

    def fit(self, x: ArrayLike, style: ArrayLike, epochs: int = 30, batch_size: int = 8,
            style_weight: float = 1.0, content_weight: float = 0.2, tv_weight: float = 0.05,
            learning_rate: float = 3e-3, seed: int = 0) -> np.ndarray:
        """Trains the transformer on images ``x`` for the image ``style``.

        Returns:
          float32 (epochs, 2): mean style and content loss per epoch.
        """
        x = self.images(x)
        epochs = check_positive_int("epochs", epochs)
        batch_size = check_positive_int("batch_size", batch_size)
        ws, wc, wt = (check_nonneg(n, v) for n, v in (
            ("style_weight", style_weight), ("content_weight", content_weight),
            ("tv_weight", tv_weight)))
        keras.utils.set_random_seed(seed)
        self.transformer = _transformer(x.shape[1:], seed)
        grams, _ = self.targets(style, x[:1])
        opt = keras.optimizers.Adam(check_positive("learning_rate", learning_rate))
        weights = self.transformer.trainable_variables

        @tf.function
        def step(batch):
            with tf.GradientTape() as tape:
                out = self._stylize(batch, training=True)
                s, c = self.losses(out, grams, self._outputs(batch)[1])
                loss = tf.reduce_mean(ws * s + wc * c + wt * total_variation(out))
            opt.apply_gradients(zip(tape.gradient(loss, weights), weights))
            return tf.stack([tf.reduce_mean(s), tf.reduce_mean(c)])

        rng = np.random.default_rng(seed)
        history = []
        for _ in range(epochs):
            order = rng.permutation(len(x))
            hist = [step(tf.constant(x[order[i : i + batch_size]])).numpy()
                    for i in range(0, len(x), batch_size)]
            history.append(np.mean(hist, axis=0))
        return np.asarray(history, "float32")

    def __call__(self, x: ArrayLike) -> np.ndarray:
        """Stylized images (N, H, W, C) of images ``x``."""
        if self.transformer is None:
            raise InputError("The transformer is not trained yet: call fit(x, style).")
        return np.asarray(self._stylize(tf.constant(self.images(x))), "float32")
