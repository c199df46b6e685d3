"""Registry of visualization methods by CLI name (each maps a :class:`Context` to an
:class:`Output`: numbers for ``.npz``/``.json`` and a figure), and the writer of outputs."""

import dataclasses
import os

import numpy as np

from cnnvis_tf import rundir
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import (
    _model,
    adversarial,
    attribution,
    cam,
    embedding,
    feature_vis,
    fooling,
    gallery,
    guided,
    inversion,
    inversion_net,
    landscape,
    multifaceted,
    neuron,
    occlusion,
    patches,
    plotting,
    saliency,
    segmentation,
    style,
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
    grouping: str = "both"
    steps: int = 100
    seed: int = 0
    filter_index: int = 0
    position: tuple = None
    regularization: str = "yosinski"
    other_model: object = None
    num_facets: int = 3
    occlusion_patch: int = 14
    occlusion_stride: int = 7

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
    occ = occlusion.Occlusion(ctx.model, ctx.occlusion_patch, ctx.occlusion_stride,
                              **_clip(ctx))
    r = occ(ctx.image, ctx.label)
    fig = plotting.occlusion(ctx.image, r, min(occ.patch_size, *ctx.image.shape[:2]),
                             ctx.class_names, stride=occ.stride, fill=occ.fill,
                             lo=ctx.clip_min, hi=ctx.clip_max)
    facts = {"label": r.label, "base_prob": r.base_prob, "patch_size": occ.patch_size,
             "stride": occ.stride, "fill": occ.fill, "table": r.table()}
    return Output({"heatmap": r.heatmap, "positions": r.positions, "pixel_map": r.pixel_map},
                  facts, fig)


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
                          cols=plotting.grid_shape(len(idx))[1], lo=ctx.clip_min,
                          hi=ctx.clip_max, panel=2.2)
    return Output({"images": imgs, "classes": np.asarray(idx),
                   "objective": am.objective(imgs, idx)}, None, fig)


def _filter_max(ctx):
    layer = ctx.layer or _model.ResolvedModel(ctx.model, "filter_max").last_conv_layer()
    # The centre unit of each filter under Yosinski et al. 2015's regularizers (jitter, L2
    # decay, blur, clipping of small-norm/small-contribution pixels): localized patterns.
    am = feature_vis.ActivationMaximization(ctx.model, layer, ctx.clip_min, ctx.clip_max,
                                            spatial="center")
    idx = list(range(min(am.num_units, 16)))
    reg = {"l2": {"regularization": "l2", "tv_weight": 0.1}}.get(
        ctx.regularization, {"regularization": "yosinski", "l2_weight": 0.01})
    imgs = am(idx, steps=ctx.steps, jitter=1, seed=ctx.seed, **reg)
    fig = plotting.images(imgs, [f"filter {i}" for i in idx],
                          f"{layer}: centre unit of each filter, maximized "
                          f"({'L2 + TV' if reg['regularization'] == 'l2' else 'Yosinski priors'}"
                          ", jitter)", cols=plotting.grid_shape(len(idx))[1],
                          lo=ctx.clip_min, hi=ctx.clip_max, panel=2.0)
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
                          lo=ctx.clip_min, hi=ctx.clip_max, panel=3.4)
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
    fig = plotting.loss_accuracy(r["alpha"], r["loss"], r["accuracy"],
                                 "alpha (0 = initial, 1 = trained)",
                                 "Linear interpolation initial -> trained weights",
                                 vlines=(0, 1))
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
                              by=ctx.grouping, project_layer=ctx.layer, **_clip(ctx))
    groups = res.pop("groups")
    facts = {"layers": res.pop("layers"), "project_layer": res.pop("project_layer"),
             "grouping": res.pop("grouping"),
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
                          "lambda ||x||^2 from zeros", cols=plotting.grid_shape(len(idx))[1],
                          lo=ctx.clip_min, hi=ctx.clip_max, panel=2.2)
    return Output({"images": imgs, "classes": np.asarray(idx), "objective": hist}, None, fig)


def _loss_1d_models(ctx):
    r = landscape.interpolate_models(ctx.model, ctx.other_model, ctx.x, ctx.y, **_clip(ctx))
    fig = plotting.loss_accuracy(r["alpha"], r["loss"], r["accuracy"],
                                 "alpha (0 = this model, 1 = other model)",
                                 "Linear interpolation between two trained solutions",
                                 vlines=(0, 1))
    return Output(r, {"endpoints": "model_dir at alpha=0, other_model_dir at alpha=1"}, fig)


def _attribution(name, title, label, signed=False, overlay=False):
    """A method of :mod:`attribution` (LayerCAM, RISE, Gradient x Input, VarGrad, pixel
    occlusion) on the context's image."""

    def run(ctx):
        explain = attribution.explainer(name, ctx.model, layer=ctx.layer, seed=ctx.seed,
                                        **_clip(ctx))
        return _attr(ctx, explain(ctx.image[None], [ctx.label]), title, label, signed, overlay)

    return run


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


def _fooling(ctx):
    evo = fooling.EvolutionaryFooling(ctx.model, **_clip(ctx))
    imgs, hist = evo(generations=10 * ctx.steps, seed=ctx.seed)
    k = np.arange(len(imgs))
    fig = plotting.images(imgs, [f"{ctx.name(i)} ({p:.3f})" for i, p in zip(k, hist[-1])],
                          f"Evolved fooling images (MAP-Elites, {len(hist) - 1} generations)",
                          lo=ctx.clip_min, hi=ctx.clip_max)
    return Output({"images": imgs, "classes": k, "history": hist},
                  {"probability": hist[-1].tolist(), "generations": len(hist) - 1,
                   "fooled_above_0.99": int((hist[-1] > 0.99).sum())}, fig)


def _multifaceted(ctx):
    mf = multifaceted.MultifacetedVisualization(ctx.model, ctx.layer, **_clip(ctx))
    unit = ctx.label if ctx.layer is None else (ctx.channel or 0)
    r = mf(ctx.x, unit, num_facets=ctx.num_facets, top=min(50, len(ctx.x)),
           steps=max(ctx.steps // 2, 5), seed=ctx.seed)
    n = len(r["images"])
    what = ctx.name(unit) if ctx.layer is None else f"{ctx.layer}[{unit}]"
    titles = [f"facet {i}: mean of top" for i in range(n)] + [
        f"facet {i}: {a:.2f}" for i, a in enumerate(r["history"][-1])]
    fig = plotting.images(list(r["init"]) + list(r["images"]), titles,
                          f"Multifaceted visualization of {what} (top: cluster means, bottom: "
                          "optimized)", cols=n, lo=ctx.clip_min, hi=ctx.clip_max)
    return Output(dict(r, unit=unit), None, fig)


def _inversion_net(ctx):
    cut = max(1, int(0.8 * len(ctx.x)))
    net = inversion_net.InversionNetwork(ctx.model, ctx.layer, seed=ctx.seed, **_clip(ctx))
    hist = net.fit(ctx.x[:cut], epochs=max(5, ctx.steps // 2))
    held = ctx.x[cut:]
    rec = net(held)
    mse = float(((rec - held) ** 2).mean())
    base = float(((ctx.x[:cut].mean(axis=0) - held) ** 2).mean())
    n = min(8, len(held))
    fig = plotting.images(list(held[:n]) + list(rec[:n]), ["held-out"] * n + ["inverted"] * n,
                          f"Inversion network from {ctx.layer or 'penultimate features'}: "
                          f"MSE {mse:.4f} (mean image {base:.4f})", cols=n, lo=ctx.clip_min,
                          hi=ctx.clip_max)
    return Output({"original": held[:n], "reconstruction": rec[:n], "loss": hist},
                  {"mse": mse, "mean_image_mse": base, "train_images": cut,
                   "held_out_images": len(held)}, fig)


def _style_pair(ctx):
    other = np.flatnonzero(ctx.y != ctx.label)
    return int(other[0]) if len(other) else (ctx.index + 1) % len(ctx.x)


def _style_transfer(ctx):
    ns = style.NeuralStyle(ctx.model, **_clip(ctx))
    s = _style_pair(ctx)
    img, hist = ns(ctx.image, ctx.x[s], steps=ctx.steps, seed=ctx.seed)
    fig = plotting.images([ctx.image, ctx.x[s], img[0]], ["content", "style", "stylized"],
                          f"Neural style ({', '.join(ns.style_layers)}): style loss "
                          f"{hist[0, 0]:.3g} -> {hist[-1, 0]:.3g}", lo=ctx.clip_min,
                          hi=ctx.clip_max)
    return Output({"image": img[0], "history": hist, "style_index": s},
                  {"style_loss_start": float(hist[0, 0]), "style_loss_end": float(hist[-1, 0]),
                   "content_loss_end": float(hist[-1, 1])}, fig)


def _fast_style(ctx):
    fs = style.FastStyleTransfer(ctx.model, **_clip(ctx))
    s = _style_pair(ctx)
    pool = np.delete(np.arange(len(ctx.x)), s)
    train, test = pool[:16], pool[16:24] if len(pool) > 16 else pool[:8]
    hist = fs.fit(ctx.x[train], ctx.x[s], epochs=max(5, ctx.steps), seed=ctx.seed)
    out = fs(ctx.x[test])
    before, after = fs.style_loss(ctx.x[test], ctx.x[s]), fs.style_loss(out, ctx.x[s])
    fig = plotting.images([ctx.x[s]] + list(ctx.x[test]) + [ctx.x[s]] + list(out),
                          ["style"] + [f"{b:.3g}" for b in before] + ["style"] +
                          [f"{a:.3g}" for a in after],
                          "Fast style transfer (top: inputs, bottom: transformer outputs; "
                          "titles: style loss)", cols=len(test) + 1, lo=ctx.clip_min,
                          hi=ctx.clip_max)
    return Output({"inputs": ctx.x[test], "outputs": out, "history": hist},
                  {"style_loss_inputs": float(before.mean()),
                   "style_loss_outputs": float(after.mean()), "train_images": len(train)}, fig)


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
    "fooling": _fooling,
    "multifaceted": _multifaceted,
    "inversion_net": _inversion_net,
    "style_transfer": _style_transfer,
    "fast_style": _fast_style,
    "layercam": _attribution("layercam", "LayerCAM", "normalized CAM", overlay=True),
    "rise": _attribution("rise", "RISE", "mean probability of masks keeping the pixel"),
    "gradient_input": _attribution("gradient_input", "Gradient x Input",
                                   "attribution (sum over channels)", signed=True),
    "vargrad": _attribution("vargrad", "VarGrad", "gradient variance (sum over channels)"),
    "pixel_occlusion": _attribution("pixel_occlusion", "Occlusion of single pixels",
                                    "logit drop", signed=True),
}


def parse_methods(text: str) -> list[str]:
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
        rundir.write_npz(path, **out.arrays)
        paths.append(path)
    if out.facts is not None or not out.arrays:
        path = os.path.join(output_dir, f"{name}.json")
        rundir.write_json(path, out.facts or {})
        paths.append(path)
    return paths
