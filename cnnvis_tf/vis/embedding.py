"""Dataset-level views of the penultimate features: t-SNE, PCA and nearest neighbours.

References:
  van der Maaten, L. and Hinton, G. Visualizing Data using t-SNE. JMLR 2008.
  Krizhevsky, A., Sutskever, I. and Hinton, G. E. ImageNet Classification with Deep
  Convolutional Neural Networks. NeurIPS 2012 (nearest neighbours in feature space, Fig. 4).
  Campello, R. J. G. B., Moulavi, D. and Sander, J. Density-Based Clustering Based on
  Hierarchical Density Estimates. PAKDD 2013 (HDBSCAN, density clusters of the t-SNE map).
"""

from collections.abc import Sequence

import keras
import numpy as np
from numpy.typing import ArrayLike
from sklearn.cluster import DBSCAN, HDBSCAN
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

    def __call__(self, x: ArrayLike, batch_size: int = 256) -> np.ndarray:
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


def features(model: keras.Model, x: ArrayLike, layer: str | None = None, batch_size: int = 256, *,
             clip_min: float = 0.0, clip_max: float = 1.0) -> np.ndarray:
    """``Features(model, layer)(x)``: flattened features (N, D), penultimate by default."""
    return Features(model, layer, clip_min=clip_min, clip_max=clip_max)(x, batch_size)


def pca(feats: ArrayLike, dims: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """PCA projection; returns (projection (N, dims), explained variance ratios)."""
    feats = np.asarray(feats, dtype="float64")
    dims = min(dims, feats.shape[0], feats.shape[1])
    p = PCA(n_components=dims)
    return p.fit_transform(feats).astype("float32"), p.explained_variance_ratio_


def tsne(feats: ArrayLike, dims: int = 2, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """t-SNE embedding (perplexity lowered to fit small sets); returns (N, dims)."""
    feats = np.asarray(feats, dtype="float32")
    if len(feats) < 4:
        raise InputError(f"t-SNE needs at least 4 examples, received {len(feats)}. "
                         "Pass more examples.")
    perplexity = min(float(perplexity), (len(feats) - 1) / 3.0)
    # exact gradients for small sets and one neighbour-search job: Barnes-Hut with parallel
    # neighbour search was 100x slower on a busy 2-core machine for 64 points.
    emb = TSNE(n_components=dims, perplexity=perplexity, init="pca", random_state=seed,
               method="exact" if len(feats) <= 200 else "barnes_hut", n_jobs=1)
    return emb.fit_transform(feats).astype("float32")


def neighbors(model: keras.Model, x: ArrayLike, queries: Sequence[int], k: int = 5,
              layer: str | None = None, *, clip_min: float = 0.0, clip_max: float = 1.0) -> dict:
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


CLUSTERINGS = ("hdbscan", "dbscan")


def density_clusters(points: ArrayLike, labels: ArrayLike, method: str = "hdbscan",
                     min_cluster_size: int | None = None, eps: float | None = None) -> dict:
    """Density clusters of an embedding (e.g. the t-SNE map) and their label purity.

    Args:
      points: (N, d) embedding.
      labels: (N,) class labels, used only to score the clusters.
      method: ``"hdbscan"`` or ``"dbscan"``.
      min_cluster_size: smallest cluster (HDBSCAN) / ``min_samples`` (DBSCAN); default
        max(5, N // 50).
      eps: DBSCAN radius; default the 10th percentile of the pairwise distances.

    Returns:
      dict with ``clusters`` (N,) ids (-1 = noise), ``sizes``, ``majority`` and
      ``cluster_purity`` per cluster, ``purity`` (majority-label fraction of the clustered
      points), ``noise_fraction`` and ``num_clusters``.
    """
    pts = np.asarray(points, dtype="float64")
    labels = np.asarray(labels).astype("int64")
    if pts.ndim != 2 or len(pts) != len(labels) or len(pts) < 4:
        raise InputError(f"density_clusters needs (N, d) points with N >= 4 and N labels; "
                         f"received points {pts.shape} and {len(labels)} labels.")
    size = check_positive_int("min_cluster_size", min_cluster_size or max(5, len(pts) // 50))
    if method == "hdbscan":
        ids = HDBSCAN(min_cluster_size=max(2, size), copy=True).fit_predict(pts)
    elif method == "dbscan":
        if eps is None:
            d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
            eps = float(np.percentile(d[np.triu_indices(len(pts), 1)], 10))
        ids = DBSCAN(eps=eps, min_samples=size).fit_predict(pts)
    else:
        raise InputError(f"Unknown clustering {method!r}. Choose one of: "
                         f"{', '.join(CLUSTERINGS)}.")
    found = [k for k in np.unique(ids) if k >= 0]
    sizes = np.array([(ids == k).sum() for k in found], "int64")
    counts = [np.bincount(labels[ids == k]) for k in found]
    majority = np.array([c.argmax() for c in counts], "int64")
    hits = np.array([c.max() for c in counts], "int64")
    clustered = int(sizes.sum())
    return {"clusters": ids.astype("int64"), "sizes": sizes, "majority": majority,
            "cluster_purity": (hits / np.maximum(sizes, 1)).astype("float32"),
            "purity": float(hits.sum() / clustered) if clustered else 0.0,
            "noise_fraction": float((ids < 0).mean()), "num_clusters": len(found)}


class TSNEClusters(Features):
    """t-SNE map of the features, then density clusters on it, scored by label purity."""

    def __call__(self, x: ArrayLike, y: ArrayLike, method: str = "hdbscan",
                 min_cluster_size: int | None = None, seed: int = 0) -> dict:
        """Returns :func:`density_clusters` of the t-SNE map of ``x`` plus ``points``."""
        x = self.images(x)
        y = check_labels(y, len(x), self.resolved.num_classes)
        pts = tsne(super().__call__(x), seed=seed)
        return dict(density_clusters(pts, y, method, min_cluster_size), points=pts)
