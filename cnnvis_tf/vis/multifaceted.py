"""Multifaceted feature visualization: one activation-maximization image per facet of a unit.

The images that most activate a unit (a class logit, or a channel of a layer) are clustered
by k-means on their penultimate features; each cluster is a facet. Each facet's
optimization starts from the mean of the ``n_closest`` images nearest its centroid, and
climbs the unit's activation with a total-variation prior, inside the input range.

References:
  Nguyen, A., Yosinski, J. and Clune, J. Multifaceted Feature Visualization: Uncovering
  the Different Types of Features Learned By Each Neuron in Deep Neural Networks.
  ICML Visualization for Deep Learning workshop, 2016.
"""

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike
from sklearn.cluster import KMeans

from cnnvis_tf.checks import check_nonneg, check_positive, check_positive_int
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model, embedding
from cnnvis_tf.vis.inversion import total_variation


class MultifacetedVisualization(_model.Visualizer):
    """Facets of a class logit (``layer=None``) or of one channel of ``layer``.

    Args:
      model: any Keras classifier.
      layer: ``None`` for classes; a layer name for its channels (mean over positions).
      clip_min, clip_max: the model's input range.
    """

    def __init__(self, model: keras.Model, layer: str | None = None, *, clip_min: float = 0.0,
                 clip_max: float = 1.0):
        super().__init__(model, layer, clip_min=clip_min, clip_max=clip_max)
        r = self.resolved
        self.net = r.keras_model() if layer is None else r.keras_model([layer], logits=False)
        self.num_units = r.num_classes if layer is None else int(r.shapes[layer][-1])
        self._features = embedding.Features(model, clip_min=clip_min, clip_max=clip_max)

    def activation(self, x, unit):
        """The unit's activation per image (logit, or channel mean over positions)."""
        out = self.net(tf.convert_to_tensor(x), training=False)
        out = out[..., unit]
        return tf.reduce_mean(out, axis=list(range(1, len(out.shape)))) if len(
            out.shape) > 1 else out

    def facets(self, x: ArrayLike, unit: int, num_facets: int = 3, top: int = 50,
               n_closest: int = 15, seed: int = 0) -> dict:
        """Clusters the ``top`` images of ``x`` most activating ``unit``.

        Returns:
          dict with ``top`` (indices into ``x``), ``cluster`` (facet of each top image) and
          ``init`` (num_facets, H, W, C): the mean of the ``n_closest`` images nearest each
          centroid (penultimate-feature space).
        """
        x = self.images(x)
        if not isinstance(unit, (int, np.integer)) or not 0 <= unit < self.num_units:
            raise InputError(f"Invalid value received for argument `unit`. Expected an "
                             f"integer in [0, {self.num_units - 1}]. Received: unit={unit!r}")
        num_facets = check_positive_int("num_facets", num_facets)
        top = min(check_positive_int("top", top), len(x))
        if top < num_facets:
            raise InputError(f"Need at least num_facets={num_facets} images, received {top}.")
        acts = np.concatenate([self.activation(x[i : i + 256], int(unit)).numpy()
                               for i in range(0, len(x), 256)])
        order = np.argsort(-acts)[:top]
        feats = self._features(x[order]).astype("float64")
        km = KMeans(num_facets, n_init=10, random_state=seed).fit(feats)
        k = min(check_positive_int("n_closest", n_closest), top)
        init = []
        for c, center in enumerate(km.cluster_centers_):
            members = np.flatnonzero(km.labels_ == c)
            near = members[np.argsort(np.linalg.norm(feats[members] - center, axis=1))][:k]
            init.append(x[order[near]].mean(axis=0))
        return {"top": order, "cluster": km.labels_.astype("int64"),
                "init": np.asarray(init, "float32")}

    def __call__(self, x: ArrayLike, unit: int, num_facets: int = 3, top: int = 50,
                 n_closest: int = 15, steps: int = 50, learning_rate: float = 0.02,
                 tv_weight: float = 0.5, seed: int = 0) -> dict:
        """One image per facet of ``unit``, optimized from its cluster's mean image.

        Returns:
          dict of :meth:`facets` plus ``images`` (num_facets, H, W, C) and ``history``
          (steps + 1, num_facets) unit activation, the first row at the mean images.
        """
        out = self.facets(x, unit, num_facets, top, n_closest, seed)
        steps = check_positive_int("steps", steps)
        lr = check_positive("learning_rate", learning_rate)
        tv = check_nonneg("tv_weight", tv_weight)
        var = tf.Variable(out["init"])
        opt = keras.optimizers.Adam(lr)
        unit = int(unit)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                a = self.activation(var, unit)
                loss = -tf.reduce_sum(a) + tv * tf.reduce_sum(total_variation(var))
            opt.apply_gradients([(tape.gradient(loss, var), var)])
            var.assign(tf.clip_by_value(var, self.clip_min, self.clip_max))
            return a

        history = [step().numpy() for _ in range(steps)]
        history.append(self.activation(var, unit).numpy())
        return dict(out, images=var.numpy(), history=np.asarray(history, "float32"))
