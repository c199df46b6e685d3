"""Dataset-level views of the penultimate features: t-SNE, PCA and nearest neighbours.

References:
  van der Maaten, L. and Hinton, G. Visualizing Data using t-SNE. JMLR 2008.
  Krizhevsky, A., Sutskever, I. and Hinton, G. E. ImageNet Classification with Deep
  Convolutional Neural Networks. NeurIPS 2012 (nearest neighbours in feature space, Fig. 4).
"""

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.neighbors import NearestNeighbors

from cnnvis_tf.checks import check_labels, check_positive_int
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model


class Features(_model.Visualizer):
    """Flattened features of a layer: the input of the layer producing the logits (the
    penultimate features) by default, at any nesting depth.

    Args:
      model: any Keras classifier.
      layer: a layer name whose output is read instead.
      clip_min, clip_max: the model's input range.
    """

    def __call__(self, x, batch_size=256):
        """Returns float32 (N, D) features of images ``x``."""
        x = self.images(x)
        r = self.resolved
        if self.layer is not None:
            feats = r.predict(x, [self.layer], batch_size=batch_size)[0]
        elif r.head is not None:
            feats = r.predict(x, inputs_of=[r.head], batch_size=batch_size)[0]
        else:
            raise InputError(f"Features cannot find the layer producing the logits of "
                             f"{self.model.name!r}; pass layer=<name>.")
        return feats.reshape(len(feats), -1).astype("float32")


def features(model, x, layer=None, batch_size=256, *, clip_min=0.0, clip_max=1.0):
    """``Features(model, layer)(x)``: flattened features (N, D), penultimate by default."""
    return Features(model, layer, clip_min=clip_min, clip_max=clip_max)(x, batch_size)


def pca(feats, dims=2):
    """PCA projection; returns (projection (N, dims), explained variance ratios)."""
    feats = np.asarray(feats, dtype="float64")
    dims = min(dims, feats.shape[0], feats.shape[1])
    p = PCA(n_components=dims)
    return p.fit_transform(feats).astype("float32"), p.explained_variance_ratio_


def tsne(feats, dims=2, perplexity=30.0, seed=0):
    """t-SNE embedding (perplexity lowered to fit small sets); returns (N, dims)."""
    feats = np.asarray(feats, dtype="float32")
    if len(feats) < 4:
        raise InputError(f"t-SNE needs at least 4 examples, received {len(feats)}. "
                         "Pass more examples.")
    perplexity = min(float(perplexity), (len(feats) - 1) / 3.0)
    emb = TSNE(n_components=dims, perplexity=perplexity, init="pca", random_state=seed)
    return emb.fit_transform(feats).astype("float32")


def neighbors(model, x, queries, k=5, layer=None, *, clip_min=0.0, clip_max=1.0):
    """Nearest neighbours of ``queries`` (indices into ``x``) in feature and pixel space.

    The query itself is excluded. Distances are Euclidean.

    Returns:
      dict with ``feature`` and ``pixel`` (len(queries), k) neighbour indices and the
      matching ``feature_dist`` and ``pixel_dist``.
    """
    vis = Features(model, layer, clip_min=clip_min, clip_max=clip_max)
    x = vis.images(x)
    k = check_positive_int("k", k)
    queries = check_labels(np.atleast_1d(queries), np.size(queries), len(x), name="queries")
    if len(x) <= k:
        raise InputError(f"Need more than k={k} examples for neighbours, received {len(x)}.")
    out = {}
    spaces = {"feature": vis(x), "pixel": np.reshape(x, (len(x), -1))}
    for name, data in spaces.items():
        nn = NearestNeighbors(n_neighbors=k + 1).fit(data)
        dist, idx = nn.kneighbors(data[queries])
        keep = [[j for j in row if j != q][:k] for row, q in zip(idx, queries)]
        out[name] = np.asarray(keep, dtype="int64")
        out[f"{name}_dist"] = np.linalg.norm(
            data[out[name]] - data[queries][:, None], axis=-1
        ).astype("float32")
    return out
