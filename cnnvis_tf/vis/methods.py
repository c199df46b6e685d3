"""Registry of visualization methods by CLI name (each maps a :class:`Context` to an
:class:`Output`: numbers for ``.npz``/``.json`` and a figure), and the writer of outputs."""

import dataclasses
import json
import os

import numpy as np

from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import (
    _model,
    adversarial,
    cam,
    embedding,
    feature_vis,
    gallery,
    guided,
    inversion,
    landscape,
    neuron,
    occlusion,
    patches,
    plotting,
    saliency,
    segmentation,
    weights,
)


@dataclasses.dataclass
class Context:
    """What a method may use. ``x``/``y`` is a dataset sample; ``index`` picks the image."""

    model: object
    x: np.ndarray
    y: np.ndarray
    index: int = 0
    layer: str = None
    channel: int = None
    class_names: list = None
    clip_min: float = 0.0
    clip_max: float = 1.0
    initial_weights: str = None
    adversarial: str = None
    steps: int = 100
    seed: int = 0
    filter_index: int = 0
    position: tuple = None
    regularization: str = "yosinski"
    other_model: object = None
    num_facets: int = 3

    @property
    def image(self):
        return self.x[self.index]

    @property
    def label(self):
        return int(self.y[self.index])

    def name(self, k):
        return self.class_names[k] if self.class_names else str(k)


@dataclasses.dataclass
class Output:  # numbers for <name>.npz, facts for <name>.json, the figure for <name>.png
    arrays: dict
    facts: dict
    figure: object


def _attr(ctx, maps, title, label, signed=False, overlay=False):
    fig = plotting.attribution(ctx.image, maps[0], f"{title} for class {ctx.name(ctx.label)}",
                               label, signed, overlay)
    return Output({"map": maps, "image": ctx.image, "label": ctx.label}, None, fig)


def _clip(ctx):
    return {"clip_min": ctx.clip_min, "clip_max": ctx.clip_max}


def _filters(ctx):
    r = weights.filters(ctx.model, ctx.layer)
    return Output({"kernel": r["kernel"]}, None, plotting.filters(r["kernel"], r["rgb"],
                                                                  r["layer"]))


def _activations(ctx):
    maps = weights.activations(ctx.model, ctx.image, [ctx.layer] if ctx.layer else None,
                               **_clip(ctx))
    fig = plotting.activation_grids(ctx.image, maps, f"Activation maps, image {ctx.index}")
    return Output(maps, None, fig)


def _occlusion(ctx):
    occ = occlusion.Occlusion(ctx.model, **_clip(ctx))
    r = occ(ctx.image, ctx.label)
    fig = plotting.occlusion(ctx.image, r, min(occ.patch_size, *ctx.image.shape[:2]),
                             ctx.class_names)
    facts = {"label": r.label, "base_prob": r.base_prob, "patch_size": occ.patch_size,
             "stride": occ.stride, "fill": occ.fill, "table": r.table()}
    return Output({"heatmap": r.heatmap, "positions": r.positions}, facts, fig)


def _saliency(ctx, cls=saliency.Saliency, title="Saliency |d score / dx|"):
    return _attr(ctx, cls(ctx.model, **_clip(ctx))(ctx.image, ctx.label, seed=ctx.seed), title,
                 "max over channels of |gradient|")


def _cam(cls, title):
    def run(ctx):
        maps = cls(ctx.model, ctx.layer, **_clip(ctx))(ctx.image, ctx.label)
        return _attr(ctx, maps, title, "normalized CAM", overlay=True)

    return run


def _ig(ctx):
    ig = saliency.IntegratedGradients(ctx.model, **_clip(ctx))
    maps = ig(ctx.image, ctx.label, baseline=ctx.clip_min)
    return _attr(ctx, maps, "Integrated gradients", "attribution (sum over channels)", True)


def _relu_rule(cls, title):
    def run(ctx):
        vis = cls(ctx.model, **_clip(ctx))
        if ctx.layer is None:
            return _attr(ctx, vis(ctx.image, ctx.label), title, "input-space signal", True)
        channel = guided.strongest_channel(vis, ctx.image, ctx.layer, ctx.channel)
        maps = vis(ctx.image, layer=ctx.layer, channel=channel)
        out = _attr(ctx, maps, f"{title} of {ctx.layer}[{channel}]", "input-space signal", True)
        out.arrays["channel"] = channel
        return out

    return run


def _class_model(ctx):
    if ctx.regularization == "l2":
        return _class_model_l2(ctx)
    am = feature_vis.ActivationMaximization(ctx.model, None, ctx.clip_min, ctx.clip_max)
    idx = list(range(min(am.num_units, 16)))
    imgs = am(idx, steps=ctx.steps, regularization="yosinski", seed=ctx.seed)
    fig = plotting.images(imgs, [ctx.name(i) for i in idx], "Class models (Yosinski priors)",
                          lo=ctx.clip_min, hi=ctx.clip_max)
    return Output({"images": imgs, "classes": np.asarray(idx),
                   "objective": am.objective(imgs, idx)}, None, fig)


def _filter_max(ctx):
    layer = ctx.layer or _model.ResolvedModel(ctx.model, "filter_max").last_conv_layer()
    am = feature_vis.ActivationMaximization(ctx.model, layer, ctx.clip_min, ctx.clip_max)
    idx = list(range(min(am.num_units, 16)))
    imgs = am(idx, steps=ctx.steps, regularization="l2", tv_weight=0.1, seed=ctx.seed)
    fig = plotting.images(imgs, [f"filter {i}" for i in idx],
                          f"{layer}: activation maximization (L2 + TV)", lo=ctx.clip_min,
                          hi=ctx.clip_max)
    return Output({"images": imgs, "filters": np.asarray(idx),
                   "objective": am.objective(imgs, idx)}, None, fig)


def _act_layers(ctx):
    if ctx.layer:
        return [ctx.layer]
    r = _model.ResolvedModel(ctx.model, "inversion")
    return [r.activation_layer(n) for n in r.conv_layers()] or [r.last_conv_layer()]


def _inversion(ctx):
    imgs, titles, arrays = [ctx.image], ["original"], {}
    for layer in _act_layers(ctx):
        inv = inversion.FeatureInversion(ctx.model, layer, ctx.clip_min, ctx.clip_max)
        rec, hist = inv(ctx.image, steps=max(ctx.steps, 50), seed=ctx.seed)
        imgs.append(rec[0])
        titles.append(f"from {layer}")
        arrays[f"{layer}/image"], arrays[f"{layer}/history"] = rec[0], hist
    fig = plotting.images(imgs, titles, "Feature inversion (TV prior)", lo=ctx.clip_min,
                          hi=ctx.clip_max)
    return Output(arrays, None, fig)


def _deepdream(ctx):
    layer = _act_layers(ctx)[-1]
    dd = inversion.DeepDream(ctx.model, layer, ctx.clip_min, ctx.clip_max)
    img, hist = dd(ctx.image, steps=max(ctx.steps // 5, 10), seed=ctx.seed)
    fig = plotting.images([ctx.image, img[0]], ["original", f"dream on {layer}"], "DeepDream",
                          lo=ctx.clip_min, hi=ctx.clip_max)
    return Output({"image": img[0], "objective": hist}, None, fig)


def _top_patches(ctx):
    layer = _act_layers(ctx)[-1]
    r = patches.top_patches(ctx.model, ctx.x, layer, k=8, **_clip(ctx))
    c, k = r["patches"].shape[:2]
    titles = [f"ch {ch}: {a:.2f}" for ch, row in zip(r["channels"], r["activations"])
              for a in row]
    fig = plotting.images(r["patches"].reshape((c * k,) + r["patches"].shape[2:]), titles,
                          f"{layer}: top-{k} patches per channel (receptive field "
                          f"{r['rf_size']}px)", cols=k, lo=ctx.clip_min, hi=ctx.clip_max)
    return Output(r, None, fig)


def _pca(ctx):
    proj, var = embedding.pca(embedding.features(ctx.model, ctx.x, **_clip(ctx)))
    fig = plotting.embedding(proj, ctx.y, ctx.class_names, "PCA of penultimate features",
                             f"PC1 ({var[0]:.0%} var.)", f"PC2 ({var[1]:.0%} var.)")
    return Output({"points": proj, "labels": ctx.y, "explained_variance": var}, None, fig)


def _tsne(ctx):
    pts = embedding.tsne(embedding.features(ctx.model, ctx.x, **_clip(ctx)), seed=ctx.seed)
    fig = plotting.embedding(pts, ctx.y, ctx.class_names, "t-SNE of penultimate features")
    return Output({"points": pts, "labels": ctx.y}, None, fig)


def _neighbors(ctx):
    q = np.unique(np.r_[ctx.index, np.arange(min(5, len(ctx.x)))])[:5]
    r = embedding.neighbors(ctx.model, ctx.x, q, k=5, **_clip(ctx))
    fig = plotting.neighbors(ctx.x, q, r["feature"], r["pixel"], ctx.clip_min, ctx.clip_max)
    return Output(dict(r, queries=q), None, fig)


def _loss_1d(ctx):
    if ctx.other_model is not None:
        return _loss_1d_models(ctx)
    w0 = landscape.initial_weights(ctx.model, ctx.initial_weights)
    r = landscape.loss_1d(ctx.model, w0, ctx.x, ctx.y, **_clip(ctx))
    fig = plotting.curve(r["alpha"], {"loss": r["loss"], "accuracy": r["accuracy"]},
                         "alpha (0 = initial, 1 = trained)", "value",
                         "Linear interpolation initial -> trained weights", vlines=(0, 1))
    return Output(r, None, fig)


def _loss_2d(ctx):
    r = landscape.loss_2d(ctx.model, ctx.x, ctx.y, seed=ctx.seed, **_clip(ctx))
    fig = plotting.loss_2d(r["a"], r["b"], r["loss"], "Loss surface, filter-normalized "
                           "random directions")
    return Output(r, None, fig)


def _adversarial_diff(ctx):
    if not ctx.adversarial:
        raise InputError("adversarial_diff needs --adversarial=<experiments.attack "
                         "output_dir>/adversarial.npz.")
    res = adversarial.analyze(ctx.model, adversarial.load_pairs(ctx.adversarial),
                              **_clip(ctx))
    groups = res.pop("groups")
    facts = {"layers": res.pop("layers"), "project_layer": res.pop("project_layer"),
             "groups": {k: v.tolist() for k, v in groups.items()}}
    fig = plotting.adversarial(dict(res, **facts), ctx.clip_min, ctx.clip_max)
    return Output(res, facts, fig)


def _gallery(ctx):
    n = min(16, len(ctx.x))
    pred, prob = gallery.Gallery(ctx.model, **_clip(ctx))(ctx.x[:n], ctx.y[:n])
    fig = plotting.gallery(ctx.x[:n], ctx.y[:n], pred, prob, ctx.class_names, ctx.clip_min,
                           ctx.clip_max)
    return Output({"x": ctx.x[:n], "y": ctx.y[:n], "pred": pred, "prob": prob},
                  {"accuracy": float(np.mean(pred == ctx.y[:n])), "num_images": n}, fig)


def _filter_slices(ctx):
    vis = weights.FilterSlices(ctx.model, ctx.layer)
    slices = vis(ctx.filter_index)
    return Output({"slices": slices, "filter_index": ctx.filter_index}, {"layer": vis.layer},
                  plotting.filter_slices(slices, vis.layer, ctx.filter_index))


def _neuron_gradient(ctx):
    vis = neuron.NeuronGradient(ctx.model, ctx.layer, **_clip(ctx))
    channel, position = vis.locate(ctx.image, ctx.channel)
    position = ctx.position if ctx.position is not None else position
    grad = vis(ctx.image, channel, position)
    where = "" if position is None else f" at {tuple(position)}"
    fig = plotting.attribution(ctx.image, grad[0], f"d {vis.layer}[{channel}]{where} / d image",
                               "gradient (sum over channels)", signed=True)
    return Output({"gradient": grad[0], "image": ctx.image, "channel": channel,
                   "position": np.asarray(position if position is not None else [-1])},
                  {"layer": vis.layer, "channel": channel,
                   "position": None if position is None else list(position)}, fig)


def _class_model_l2(ctx):
    cm = neuron.L2ClassModel(ctx.model, **_clip(ctx))
    idx = list(range(min(cm.resolved.num_classes, 16)))
    imgs, hist = cm(idx, steps=ctx.steps)
    fig = plotting.images(imgs, [ctx.name(i) for i in idx], "Class models: argmax S_c(x) - "
                          "lambda ||x||^2 from zeros", lo=ctx.clip_min, hi=ctx.clip_max)
    return Output({"images": imgs, "classes": np.asarray(idx), "objective": hist}, None, fig)


def _loss_1d_models(ctx):
    r = landscape.interpolate_models(ctx.model, ctx.other_model, ctx.x, ctx.y, **_clip(ctx))
    fig = plotting.curve(r["alpha"], {"loss": r["loss"], "accuracy": r["accuracy"]},
                         "alpha (0 = this model, 1 = other model)", "value",
                         "Linear interpolation between two trained solutions", vlines=(0, 1))
    return Output(r, {"endpoints": "model_dir at alpha=0, other_model_dir at alpha=1"}, fig)


def _grabcut(ctx):
    n = min(8, len(ctx.x))
    sel = np.unique(np.r_[ctx.index, np.arange(n)])[:n]
    masks, maps = segmentation.SaliencyGrabCut(ctx.model, **_clip(ctx))(ctx.x[sel], ctx.y[sel])
    x = ctx.x[sel]
    bright = x.mean(axis=-1) > 0.5 * (ctx.clip_min + ctx.clip_max)
    cover = [float(m[b].mean()) if b.any() else 0.0 for m, b in zip(masks, bright)]
    fig = plotting.segmentation(x, maps, masks, [ctx.name(int(c)) for c in ctx.y[sel]],
                                ctx.clip_min, ctx.clip_max)
    return Output({"masks": masks, "saliency": maps, "indices": sel},
                  {"foreground_fraction": [float(m.mean()) for m in masks],
                   "bright_pixels_covered": cover}, fig)


def _tsne_clusters(ctx):
    r = embedding.TSNEClusters(ctx.model, **_clip(ctx))(ctx.x, ctx.y, seed=ctx.seed)
    fig = plotting.clusters(r["points"], r["clusters"], r["majority"], r["purity"],
                            ctx.class_names)
    facts = {k: r[k] for k in ("purity", "noise_fraction", "num_clusters")}
    facts.update(sizes=r["sizes"].tolist(), majority=r["majority"].tolist(),
                 cluster_purity=r["cluster_purity"].tolist(), method="hdbscan")
    return Output({"points": r["points"], "clusters": r["clusters"], "labels": ctx.y}, facts,
                  fig)


METHODS = {
    "filters": _filters,
    "activations": _activations,
    "occlusion": _occlusion,
    "saliency": _saliency,
    "smoothgrad": lambda ctx: _saliency(ctx, saliency.SmoothGrad, "SmoothGrad"),
    "gradcam": _cam(cam.GradCAM, "Grad-CAM"),
    "gradcam_pp": _cam(cam.GradCAMPlusPlus, "Grad-CAM++"),
    "scorecam": _cam(cam.ScoreCAM, "Score-CAM"),
    "integrated_gradients": _ig,
    "guided_backprop": _relu_rule(guided.GuidedBackprop, "Guided backprop"),
    "deconvnet": _relu_rule(guided.Deconvnet, "Deconvnet"),
    "class_model": _class_model,
    "filter_max": _filter_max,
    "inversion": _inversion,
    "deepdream": _deepdream,
    "top_patches": _top_patches,
    "tsne": _tsne,
    "pca": _pca,
    "neighbors": _neighbors,
    "loss_1d": _loss_1d,
    "loss_2d": _loss_2d,
    "adversarial_diff": _adversarial_diff,
    "gallery": _gallery,
    "filter_slices": _filter_slices,
    "neuron_gradient": _neuron_gradient,
    "grabcut": _grabcut,
    "tsne_clusters": _tsne_clusters,
}


def parse_methods(text):
    """Comma-separated method names -> list; ``all`` selects every method.

    Raises:
      InputError: on an unknown or empty name, listing the valid ones.
    """
    names = [n.strip() for n in str(text or "").split(",") if n.strip()]
    if names == ["all"]:
        return list(METHODS)
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise InputError(f"Unknown method(s) {bad or names}. Choose from: "
                         f"{', '.join(METHODS)} (or all).")
    return names


def run(name, ctx, output_dir):
    """Runs one method and writes ``<name>.png`` and ``<name>.npz`` and/or ``.json``.

    Returns:
      list of written paths.
    """
    if ctx.layer is not None:
        _model.ResolvedModel(ctx.model, name).get(ctx.layer)
    out = METHODS[name](ctx)
    paths = [plotting.save(out.figure, os.path.join(output_dir, f"{name}.png"))]
    if out.arrays:
        path = os.path.join(output_dir, f"{name}.npz")
        np.savez_compressed(path, **{k: np.asarray(v) for k, v in out.arrays.items()})
        paths.append(path)
    if out.facts is not None or not out.arrays:
        path = os.path.join(output_dir, f"{name}.json")
        with open(path, "w") as f:
            json.dump(out.facts or {}, f, indent=2)
        paths.append(path)
    return paths
