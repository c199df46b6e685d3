"""Dataset-level views of the penultimate features: t-SNE, PCA and nearest neighbours.

References:
  van der Maaten, L. and Hinton, G. Visualizing Data using t-SNE. JMLR 2008.
  Krizhevsky, A., Sutskever, I. and Hinton, G. E. ImageNet Classification with Deep
  Convolutional Neural Networks. NeurIPS 2012 (nearest neighbours in feature space, Fig. 4).
"""

import keras
import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.neighbors import NearestNeighbors

from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model


def features(model, x, layer=None, batch_size=256):
    """Flattened features of images ``x``: the input of the last layer by default.

    Returns:
      float32 (N, D).
    """
    model = _model.logits_model(model)
    out = (_model.penultimate_output(model) if layer is None
           else _model.get_layer(model, layer).output)
    feats = _model.predict(keras.Model(model.inputs[0], out), _model.as_batch(x, model),
                           batch_size)
    return feats.reshape(len(feats), -1).astype("float32")


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


def neighbors(model, x, queries, k=5, layer=None):
    """Nearest neighbours of ``queries`` (indices into ``x``) in feature and pixel space.

    The query itself is excluded. Distances are Euclidean.

    Returns:
      dict with ``feature`` and ``pixel`` (len(queries), k) neighbour indices and the
      matching ``feature_dist`` and ``pixel_dist``.
    """
    queries = np.asarray(queries, dtype="int64")
    if len(x) <= k:
        raise InputError(f"Need more than k={k} examples for neighbours, received {len(x)}.")
    if queries.min() < 0 or queries.max() >= len(x):
        raise InputError(f"Query indices {queries.tolist()} out of range 0..{len(x) - 1}.")
    out = {}
    spaces = {"feature": features(model, x, layer), "pixel": np.reshape(x, (len(x), -1))}
    for name, data in spaces.items():
        nn = NearestNeighbors(n_neighbors=k + 1).fit(data)
        dist, idx = nn.kneighbors(data[queries])
        keep = [[j for j in row if j != q][:k] for row, q in zip(idx, queries)]
        out[name] = np.asarray(keep, dtype="int64")
        out[f"{name}_dist"] = np.linalg.norm(
            data[out[name]] - data[queries][:, None], axis=-1
        ).astype("float32")
    return out
