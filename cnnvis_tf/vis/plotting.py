"""Figures for every visualization (the only module that imports matplotlib; Agg backend).

Every function takes numbers computed elsewhere and returns a ``matplotlib`` figure;
:func:`save` writes and closes it in the format chosen by :func:`set_figure_format`
(``--figure_format`` of the scripts). Colour maps are perceptually uniform (viridis/magma
for magnitudes, RdBu_r centred at 0 for signed maps) and colour bars are opaque.
"""

import os
import textwrap
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import cm, colors  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from numpy.typing import ArrayLike  # noqa: E402

from cnnvis_tf.errors import InputError  # noqa: E402

FIGURE_FORMATS = ("png", "pdf", "svg")
SIGNED_CMAP = "RdBu_r"  # diverging, centred at 0
MAGNITUDE_CMAP = "magma"
_SETTINGS = {"format": "png", "dpi": 150}


def set_figure_format(fmt: str) -> None:
    """Makes :func:`save` write ``fmt`` files (png, pdf or svg) from now on."""
    fmt = str(fmt).lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise InputError(f"--figure_format={fmt!r} is not supported; choose one of "
                         f"{', '.join(FIGURE_FORMATS)}.")
    _SETTINGS["format"] = fmt


def figure_format() -> str:
    """The format :func:`save` writes (``png`` unless :func:`set_figure_format` changed it)."""
    return _SETTINGS["format"]


def figure_path(path: str, fmt: str | None = None) -> str:
    """``path`` with the extension of ``fmt`` (default: the current figure format)."""
    return f"{os.path.splitext(path)[0]}.{fmt or figure_format()}"


def save(fig: Figure, path: str, fmt: str | None = None) -> str:
    """Writes ``fig`` to ``path`` with its extension replaced by the figure format (or
    ``fmt``), closes it and returns the path written."""
    if fmt is not None and fmt not in FIGURE_FORMATS:
        raise InputError(f"figure format {fmt!r} is not supported; choose one of "
                         f"{', '.join(FIGURE_FORMATS)}.")
    path = figure_path(path, fmt)
    fig.savefig(path, dpi=_SETTINGS["dpi"], bbox_inches="tight")
    plt.close(fig)
    return path


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) of a near-square grid for ``n`` panels: an exact rows x cols with
    cols <= 2 rows when there is one (32 -> 4x8, 64 -> 8x8), else ceil(sqrt(n)) columns."""
    n = max(1, int(n))
    best = None
    for r in range(1, int(np.sqrt(n)) + 1):
        if n % r == 0 and n // r <= 2 * r:
            best = (r, n // r)
    if best:
        return best
    cols = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols


def _colorbar(fig, mappable, ax, label, **kwargs):
    """An opaque colour bar for ``mappable`` (also when the image is drawn translucent)."""
    sm = cm.ScalarMappable(norm=mappable.norm, cmap=mappable.cmap)
    return fig.colorbar(sm, ax=ax, label=label, **kwargs)


def _wrap(text, width=14):
    """Long labels (class names) wrapped so neighbouring panel titles do not overlap."""
    return "\n".join(textwrap.wrap(str(text), width, break_long_words=True)) or str(text)


def _name(class_names, k):
    k = int(k)
    return str(class_names[k]) if class_names is not None and 0 <= k < len(class_names) \
        else str(k)


def _legend_outside(ax, handles=None, labels=None, **kwargs):
    """Legend to the right of the axes (never over the data)."""
    args = () if handles is None else (handles, labels)
    return ax.legend(*args, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                     **{"fontsize": 8, **kwargs})


def _img(img, lo=0.0, hi=1.0):
    img = np.asarray(img, dtype="float32")
    img = np.clip((img - lo) / ((hi - lo) or 1.0), 0, 1)
    return img[..., 0] if img.shape[-1] == 1 else img


def _show(ax, img, title=None, lo=0.0, hi=1.0):
    ax.imshow(_img(img, lo, hi), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _grid(n, cols, panel=1.3):
    cols = max(1, min(cols, n))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(panel * cols + 1, panel * rows + 0.6),
                             squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def filters(kernel: np.ndarray, rgb: bool, layer: str) -> Figure:
    """First layer: one image per filter in a near-square grid (single-channel filters on
    one signed scale with a colour bar, colour filters min-max scaled each). Deeper: kernel
    slices, rows = filters, columns = input channels, one signed scale with a colour bar."""
    kh, kw, cin, cout = kernel.shape
    m = float(np.abs(kernel).max()) or 1.0
    if rgb:
        rows, cols = grid_shape(cout)
        fig, axes = plt.subplots(rows, cols, figsize=(0.8 * cols + 1.4, 0.8 * rows + 0.7),
                                 squeeze=False, layout="constrained")
        im = None
        for f, ax in enumerate(axes.ravel()):
            ax.set_xticks([])
            ax.set_yticks([])
            if f >= cout:
                ax.axis("off")
                continue
            k = kernel[..., f]
            if cin == 1:
                im = ax.imshow(k[..., 0], cmap=SIGNED_CMAP, vmin=-m, vmax=m)
            else:
                ax.imshow((k - k.min()) / (np.ptp(k) or 1.0), interpolation="nearest")
            ax.set_title(str(f), fontsize=7, pad=2)
        if im is not None:
            _colorbar(fig, im, axes.ravel().tolist(), "weight", shrink=0.7)
        how = "one signed scale" if cin == 1 else "each min-max scaled"
        fig.suptitle(f"{layer}: {cout} filters ({kh}x{kw}x{cin}, {rows}x{cols} grid), {how}",
                     fontsize=10)
        return fig
    cout = min(cout, 16)
    fig, axes = plt.subplots(cout, cin, figsize=(0.8 * cin + 1.6, 0.8 * cout + 0.7),
                             squeeze=False, layout="constrained")
    for f in range(cout):
        for c in range(cin):
            im = axes[f, c].imshow(kernel[:, :, c, f], cmap=SIGNED_CMAP, vmin=-m, vmax=m)
            axes[f, c].set_xticks([])
            axes[f, c].set_yticks([])
            if f == 0:
                axes[f, c].set_title(f"in {c}", fontsize=7)
        axes[f, 0].set_ylabel(f"out {f}", fontsize=7)
    _colorbar(fig, im, axes.ravel().tolist(), "weight", shrink=0.6)
    fig.suptitle(f"{layer}: kernel slices (rows: filters, columns: input channels)",
                 fontsize=10)
    return fig


def activations(image: np.ndarray, maps: dict[str, np.ndarray], title: str = "",
                max_channels: int = 16) -> Figure:
    """One row per layer: the input, then up to ``max_channels`` feature maps."""
    names = list(maps)
    cols = 1 + min(max_channels, max(m.shape[-1] for m in maps.values()))
    fig, axes = plt.subplots(len(names), cols, figsize=(1.2 * cols + 1.2, 1.35 * len(names)),
                             squeeze=False, layout="constrained")
    for r, name in enumerate(names):
        _show(axes[r, 0], image, "input")
        axes[r, 0].set_ylabel(name, fontsize=8)
        a = maps[name]
        vmax = float(a.max()) or 1.0
        for c in range(1, cols):
            axes[r, c].axis("off")
            if c - 1 < a.shape[-1]:
                im = axes[r, c].imshow(a[..., c - 1], cmap="viridis", vmin=0, vmax=vmax)
                axes[r, c].set_title(f"ch {c - 1}", fontsize=7)
        _colorbar(fig, im, axes[r].tolist(), "activation", shrink=0.8)
    fig.suptitle(title or "Activation maps")
    return fig


def _gray(img, lo, hi):
    g = _img(img, lo, hi)
    return g.mean(axis=-1) if g.ndim == 3 else g


def occlusion(image: np.ndarray, result, patch: int, class_names: Sequence[str] | None,
              stride: int | None = None, fill: float | None = None, lo: float = 0.0,
              hi: float = 1.0) -> Figure:
    """Occlusion sensitivity (Zeiler & Fergus 2014, Fig. 7) in three panels: the input with
    the patch geometry (first patch solid, the next one a stride away dashed), the
    true-class probability map at image resolution (each pixel: the mean over the patches
    covering it, ``result.pixel_map``) with the image's outline in cyan, and the image
    occluded at the most damaging position with its prediction."""
    h, w = image.shape[:2]
    pmap = getattr(result, "pixel_map", None)
    if pmap is None:  # no pixel map: each patch position's value spread over its patch
        pmap = np.full((h, w), np.nan, "float32")
        for (r, c), p in zip(result.positions, result.true_prob):
            pmap[r:r + patch, c:c + patch] = p
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=(11.5, 4.2), layout="constrained")
    name = _wrap(_name(class_names, result.label), 24)
    geometry = f"patch {patch}x{patch}px" + (f", stride {stride}px" if stride else "")
    _show(a0, image, f"input: {name} (P={result.base_prob:.3f})\n{geometry}, "
          f"{len(result.positions)} positions", lo, hi)
    a0.title.set_fontsize(9)
    a0.add_patch(plt.Rectangle((-0.5, -0.5), patch, patch, fill=False, lw=1.8, ec="tab:red"))
    nxt = [c for r, c in result.positions if r == 0 and c > 0]
    if nxt and patch:
        a0.add_patch(plt.Rectangle((min(nxt) - 0.5, -0.5), patch, patch, fill=False, lw=1.4,
                                   ec="tab:orange", ls="--"))
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    im = a1.imshow(pmap, cmap=MAGNITUDE_CMAP, vmin=0, vmax=1, extent=extent,
                   interpolation="nearest")
    gray = _gray(image, lo, hi)  # the image as contours: the map keeps its true colours
    if np.ptp(gray) > 0:
        a1.contour(np.arange(w), np.arange(h), gray, levels=[0.5 * (gray.min() + gray.max())],
                   colors="cyan", linewidths=1.2)
    a1.set_xticks([])
    a1.set_yticks([])
    a1.set_title(f"P({name}) with the pixel occluded (mean over\nthe patches covering it; "
                 "cyan: image outline)",
                 fontsize=9)
    _colorbar(fig, im, a1, f"P(true class), unoccluded {result.base_prob:.2f}", shrink=0.85)
    k = int(np.argmin(result.true_prob))
    r, c = (int(v) for v in result.positions[k])
    worst = np.array(image, dtype="float32", copy=True)
    worst[r:r + patch, c:c + patch] = 0.5 * (lo + hi) if fill is None else fill
    pred = _wrap(_name(class_names, result.predicted[k]), 24)
    _show(a2, worst, f"most damaging patch at ({r},{c}):\nP({name})={result.true_prob[k]:.3f}, "
          f"predicted {pred}", lo, hi)
    a2.title.set_fontsize(9)
    a2.add_patch(plt.Rectangle((c - 0.5, r - 0.5), patch, patch, fill=False, lw=1.8,
                               ec="tab:red"))
    fig.suptitle("Occlusion sensitivity (Zeiler & Fergus 2014)", fontsize=11)
    return fig


def attribution(image: np.ndarray, maps: np.ndarray, title: str, label: str = "attribution",
                signed: bool = False, overlay: bool = False) -> Figure:
    """The image, then one map per row of ``maps`` (N=1 shown), with an opaque colour bar:
    signed maps on a diverging scale centred at 0, magnitudes in magma (over the image in
    gray when ``overlay``)."""
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(7.4, 3.6), layout="constrained")
    _show(a0, image, "input")
    m = np.asarray(maps, dtype="float32")
    if signed:
        m = m.sum(axis=-1) if m.ndim == 3 else m
        v = float(np.abs(m).max()) or 1.0
        im = a1.imshow(m, cmap=SIGNED_CMAP, vmin=-v, vmax=v)
    else:
        if overlay:
            a1.imshow(_gray(image, 0.0, 1.0), cmap="gray", vmin=0, vmax=1)
        im = a1.imshow(m, cmap=MAGNITUDE_CMAP, alpha=0.55 if overlay else 1.0)
    a1.set_xticks([])
    a1.set_yticks([])
    a1.set_title(label, fontsize=9)
    _colorbar(fig, im, a1, label)
    fig.suptitle(title)
    return fig


def images(imgs: np.ndarray, titles: Sequence[str], title: str, cols: int = 8, lo: float = 0.0,
           hi: float = 1.0, panel: float = 1.3) -> Figure:
    """A grid of images in the model's input range, each titled; ``panel``: inches per
    image (larger for figures that must be read, e.g. DeepDream, class models)."""
    fig, axes = _grid(len(imgs), cols, panel)
    for ax, img, t in zip(axes, imgs, titles):
        _show(ax, np.nan_to_num(img, nan=lo), t, lo, hi)
        if panel >= 2:
            ax.title.set_fontsize(10)
    fig.suptitle(title)
    return fig


def curve(x: ArrayLike, ys: dict, xlabel: str, ylabel: str, title: str,
          vlines: Sequence[float] = ()) -> Figure:
    """Line plot of several named series ``ys`` = {label: values} against ``x``."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    for name, y in ys.items():
        ax.plot(x, y, marker=".", label=name)
    for v in vlines:
        ax.axvline(v, color="gray", ls=":", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return fig


def loss_accuracy(x: ArrayLike, loss: ArrayLike, accuracy: ArrayLike, xlabel: str, title: str,
                  vlines: Sequence[float] = ()) -> Figure:
    """Loss (left axis) and accuracy in % (right axis) against ``x`` on twin y axes, each
    axis coloured like its line (Goodfellow et al. 2015's 1-D interpolation plots)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    c0, c1 = "tab:blue", "tab:orange"
    (l0,) = ax.plot(x, loss, "o-", ms=3, color=c0, label="loss")
    ax.set_ylabel("cross-entropy loss", color=c0)
    ax.tick_params(axis="y", colors=c0)
    tw = ax.twinx()
    (l1,) = tw.plot(x, 100 * np.asarray(accuracy, "float64"), "s--", ms=3, color=c1,
                    label="accuracy")
    tw.set_ylabel("accuracy (%)", color=c1)
    tw.tick_params(axis="y", colors=c1)
    tw.set_ylim(-2, 102)
    for v in vlines:
        ax.axvline(v, color="gray", ls=":", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.legend([l0, l1], ["loss (left axis)", "accuracy (right axis)"],
               loc="outside lower center", ncol=2, fontsize=8)
    return fig


def series(lines: Sequence[tuple], xlabel: str, ylabel: str, title: str) -> Figure:
    """Line plot of series with their own x: ``lines`` = [(label, x, y, fmt, kwargs), ...]."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, x, y, fmt, kwargs in lines:
        ax.plot(x, y, fmt, label=label, **kwargs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def loss_2d(a: ArrayLike, b: ArrayLike, loss: ArrayLike, title: str) -> Figure:
    """Filled contour of the loss surface with a colour bar; the trained model at (0, 0).
    Levels are log-spaced when the loss spans more than 20x; at most 5 ticks per axis."""
    fig, ax = plt.subplots(figsize=(6.0, 5.0), layout="constrained")
    loss = np.asarray(loss, "float64")
    finite = loss[np.isfinite(loss)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    norm = None
    if lo > 0 and hi / lo > 20:
        levels, norm = np.geomspace(lo, hi, 21), colors.LogNorm(lo, hi)
    else:
        levels = np.linspace(lo, hi, 21)
    cs = ax.contourf(a, b, loss, levels=levels, cmap="viridis", norm=norm, extend="neither")
    ax.contour(a, b, loss, levels=levels, colors="k", linewidths=0.3, alpha=0.6)
    ax.plot([0], [0], "*", color="tab:red", mec="w", ms=13)
    ax.annotate("trained weights", (0, 0), xytext=(8, 8), textcoords="offset points",
                color="w", fontsize=9, weight="bold")
    cb = fig.colorbar(cs, ax=ax, label="cross-entropy loss" + (" (log scale)" if norm else ""))
    if norm is None:
        cb.locator = MaxNLocator(6)
        cb.update_ticks()
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(5))
    ax.tick_params(labelsize=9)
    ax.set_aspect("equal")
    ax.set_xlabel("direction 1 (filter-normalized)")
    ax.set_ylabel("direction 2 (filter-normalized)")
    ax.set_title(title, fontsize=10)
    return fig


def class_styles(num_classes: int) -> list:
    """(colour, marker) per class: tab10 up to 10 classes, tab20 up to 20, beyond that
    tab20's colours combined with markers (distinct pairs for up to 160 classes)."""
    markers = "osD^vPX*"
    if num_classes <= 10:
        cmap = plt.get_cmap("tab10")
        return [(cmap(i), "o") for i in range(num_classes)]
    cmap = plt.get_cmap("tab20")
    return [(cmap(i % 20), markers[(i // 20) % len(markers)]) for i in range(num_classes)]


def embedding(points: np.ndarray, labels: ArrayLike, class_names: Sequence[str] | None, title: str,
              xlabel: str = "dim 1", ylabel: str = "dim 2") -> Figure:
    """Scatter of 2-D points coloured by class (:func:`class_styles`), legend outside."""
    labels = np.asarray(labels).astype("int64").ravel()
    classes = np.unique(labels)
    total = max(len(class_names) if class_names else 0, int(classes.max()) + 1)
    styles = class_styles(total)
    ncol = max(1, int(np.ceil(len(classes) / 20)))
    fig, ax = plt.subplots(figsize=(6.0 + 1.3 * ncol, 5.0), layout="constrained")
    for k in classes:
        sel = labels == k
        color, marker = styles[k]
        ax.scatter(points[sel, 0], points[sel, 1], s=10, color=color, marker=marker,
                   label=_wrap(_name(class_names, k), 18), alpha=0.8, linewidths=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _legend_outside(ax, fontsize=8 if len(classes) <= 20 else 6, markerscale=1.6, ncol=ncol,
                    title="class")
    return fig


def neighbors(x: np.ndarray, queries: Sequence[int], feat_idx: np.ndarray, pix_idx: np.ndarray,
              lo: float = 0.0, hi: float = 1.0) -> Figure:
    """Per query: the query, its feature-space neighbours, then its pixel-space ones."""
    k = feat_idx.shape[1]
    fig, axes = plt.subplots(len(queries), 2 * k + 1, figsize=(0.9 * (2 * k + 1) + 1,
                             1.0 * len(queries) + 0.8), squeeze=False)
    for r, q in enumerate(queries):
        _show(axes[r, 0], x[q], "query" if r == 0 else None, lo, hi)
        for j in range(k):
            _show(axes[r, 1 + j], x[feat_idx[r, j]], "feature" if r == 0 else None, lo, hi)
            _show(axes[r, 1 + k + j], x[pix_idx[r, j]], "pixel" if r == 0 else None, lo, hi)
    fig.suptitle(f"Nearest neighbours: {k} in feature space (left), {k} in pixel space (right)")
    return fig


def adversarial(res: dict, lo: float = 0.0, hi: float = 1.0) -> Figure:
    """Mean volatility per neuron (sorted) and fooling rate for each layer, and the mean
    deconvnet projections of the largest perturbation group."""
    layers = res["layers"]
    proj_keys = [k for k in res if k.startswith("projection/")]
    fig, axes = plt.subplots(2, max(len(layers), 3), figsize=(4 * max(len(layers), 3), 7),
                             squeeze=False, layout="constrained")
    for i, name in enumerate(layers):
        v = res[f"volatility/{name}"].mean(axis=0)
        order = res[f"ranking/{name}"]
        ax = axes[0, i]
        ax.bar(np.arange(len(v)), v[order], color="tab:red", width=1.0)
        ax.set_title(f"{name}: volatility (ranked)", fontsize=9)
        ax.set_xlabel("neuron rank")
        ax.set_ylabel("mean | ||a_adv||_F - ||a||_F |")
        tw = ax.twinx()
        tw.plot(np.arange(len(v)), res[f"fooling_rate/{name}"][order], "k.", ms=4)
        tw.set_ylim(0, 1.05)
        tw.set_ylabel("fooling rate (black dots)")
    for ax in axes[0, len(layers):]:
        ax.axis("off")
    for ax in axes[1]:
        ax.axis("off")
    if not proj_keys:
        axes[1, 1].text(0.5, 0.5, "no successful adversarial pairs: no projections",
                        ha="center", va="center")
    else:
        key = proj_keys[0]
        p = res[key]
        for j, (t, img) in enumerate(zip(("clean", "adversarial", "difference"), p)):
            ax = axes[1, j]
            ax.axis("on")
            s = img.sum(axis=-1)
            v = float(np.abs(s).max()) or 1.0
            im = ax.imshow(s, cmap=SIGNED_CMAP, vmin=-v, vmax=v)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"group {key.split('/', 1)[1]}: {t}", fontsize=9)
            _colorbar(fig, im, ax, "deconvnet projection", shrink=0.8)
    fig.suptitle(f"Clean vs adversarial (projections from {res['project_layer']})")
    return fig


# Attack and robustness figures: each writes one PNG and returns its path.


def _img_clipped(a, lo, hi):
    a = np.clip((np.asarray(a, np.float32) - lo) / ((hi - lo) or 1.0), 0.0, 1.0)
    return a[..., 0] if a.shape[-1] == 1 else a


def examples_figure(x: np.ndarray, x_adv: np.ndarray, y: ArrayLike, pred_clean: ArrayLike,
                    pred_adv: ArrayLike, class_names: Sequence[str] | None, *, n: int = 8,
                    clip_min: float = 0.0, clip_max: float = 1.0,
                    conf_clean: ArrayLike | None = None, conf_adv: ArrayLike | None = None,
                    targets: ArrayLike | None = None, attack: str | None = None,
                    budget: str | None = None, success_rate: float | None = None) -> Figure:
    """Rows: clean image, adversarial image, perturbation, for the first ``n`` examples.

    Every perturbation is drawn on ONE symmetric scale (``±`` the largest ``|δ|`` shown)
    with a colour bar, so a 0.009 perturbation looks fainter than a 0.2 one; for colour
    images the mean over channels is drawn. Fooled examples (adversarial prediction is
    the target, or differs from the true label when untargeted) have a red frame and a
    red title; targets are shown for targeted attacks. The title holds the attack, its
    budget and ``success_rate``. ``conf_*``: softmax probability of each predicted label.
    """
    n = max(1, min(n, len(x)))
    x = np.asarray(x[:n], np.float32)
    delta = np.asarray(x_adv[:n], np.float32) - x
    vmax = float(np.abs(delta).max()) or 1e-12
    shown = delta.mean(axis=-1) if delta.shape[-1] > 1 else delta[..., 0]
    targeted = targets is not None

    def conf(c, i):
        return "" if c is None else f" ({float(c[i]):.2f})"

    fig, axes = plt.subplots(3, n, figsize=(1.5 * n + 0.6, 6.2), squeeze=False,
                             layout="constrained")
    fooled = []
    for i in range(n):
        clean_ok = int(pred_clean[i]) == int(y[i])
        hit = (int(pred_adv[i]) == int(targets[i])) if targeted else \
            (int(pred_adv[i]) != int(y[i]))
        fooled.append(bool(hit and clean_ok))
        t0 = f"true: {_wrap(_name(class_names, y[i]))}\npred: " \
             f"{_wrap(_name(class_names, pred_clean[i]))}{conf(conf_clean, i)}"
        t1 = f"pred: {_wrap(_name(class_names, pred_adv[i]))}{conf(conf_adv, i)}"
        if targeted:
            t1 += f"\ntarget: {_wrap(_name(class_names, targets[i]))}"
        t1 += "\nFOOLED" if fooled[-1] else ("\nclean already wrong" if not clean_ok
                                             else "\nnot fooled")
        _show(axes[0, i], _img_clipped(x[i], clip_min, clip_max), t0)
        _show(axes[1, i], _img_clipped(x_adv[i], clip_min, clip_max), t1)
        ax = axes[2, i]
        im = ax.imshow(shown[i], cmap=SIGNED_CMAP, vmin=-vmax, vmax=vmax,
                       interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"max |δ| = {float(np.abs(delta[i]).max()):.3g}", fontsize=7)
        if not clean_ok:
            axes[1, i].title.set_color("gray")
        if fooled[-1]:
            axes[1, i].title.set_color("tab:red")
            for s in axes[1, i].spines.values():
                s.set_edgecolor("tab:red")
                s.set_linewidth(2.5)
    for ax in axes[:2].ravel():
        ax.title.set_fontsize(7)
    for row, label in enumerate(("clean", "adversarial", "perturbation δ")):
        axes[row, 0].set_ylabel(label, fontsize=9)
    what = "δ = x_adv − x" + (" (mean over channels)" if delta.shape[-1] > 1 else "")
    cax = axes[2, -1].inset_axes([1.08, 0.0, 0.09, 1.0])  # beside the row it explains
    _colorbar(fig, im, None, what, cax=cax)
    head = ", ".join(s for s in (attack, budget) if s) or "attack"
    rate = "" if success_rate is None else f": success rate {float(success_rate):.1%}"
    kind = "targeted, " if targeted else ""
    fig.suptitle(f"{head}{rate}\n{kind}{sum(fooled)}/{n} shown examples fooled (red); "
                 f"perturbations on one scale ±{vmax:.3g}", fontsize=10)
    return fig


def plot_examples(path: str, x: np.ndarray, x_adv: np.ndarray, y: ArrayLike, pred_clean: ArrayLike,
                  pred_adv: ArrayLike, class_names: Sequence[str] | None, *, n: int = 8,
                  clip_min: float = 0.0, clip_max: float = 1.0,
                  conf_clean: ArrayLike | None = None, conf_adv: ArrayLike | None = None,
                  targets: ArrayLike | None = None, attack: str | None = None,
                  budget: str | None = None, success_rate: float | None = None) -> str:
    """Writes :func:`examples_figure` to ``path`` and returns the path written."""
    return save(examples_figure(
        x, x_adv, y, pred_clean, pred_adv, class_names, n=n, clip_min=clip_min,
        clip_max=clip_max, conf_clean=conf_clean, conf_adv=conf_adv, targets=targets,
        attack=attack, budget=budget, success_rate=success_rate), path)


def curves_figure(curves: dict, *, xlabel: str, title: str = "", reverse_x: bool = False,
                  errors: dict | None = None, direction: str = "stronger attack →") -> Figure:
    """Accuracy (%) against budget, one line per model, each model's clean accuracy a
    dashed line of its colour; y zoomed to the data, x ticks at the budgets evaluated,
    ``direction`` in the x label, the legend outside the axes.

    Args:
      curves: ``{model name: {budget: accuracy in [0, 1]}}`` ("Clean": the dashed line).
      errors: optional ``{model name: {budget: std}}`` drawn as error bars.
      reverse_x: budgets decrease to the right (SNR: a lower SNR is a stronger attack).
    """
    fig, ax = plt.subplots(figsize=(6.6, 3.9), layout="constrained")
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    levels_all, values, has_clean = set(), [], False
    for i, (name, curve) in enumerate(curves.items()):
        color = palette[i % len(palette)]
        err = (errors or {}).get(name) or {}
        levels = [k for k in curve if k != "Clean"]
        levels_all.update(float(k) for k in levels)
        acc = np.array([100 * curve[k] for k in levels], "float64")
        std = np.array([100 * err.get(k, 0.0) for k in levels], "float64")
        ax.errorbar(levels, acc, yerr=std if std.any() else None, marker="o", capsize=3,
                    color=color, label=name)
        values += list(acc - std) + list(acc + std)
        if "Clean" in curve:
            has_clean = True
            clean = 100 * curve["Clean"]
            ax.axhline(clean, color=color, ls="--", lw=1.3, alpha=0.9)
            values.append(clean)
    values = [v for v in values if np.isfinite(v)] or [0.0, 100.0]
    lo, hi = min(values), max(values)
    pad = max(1.5, 0.08 * (hi - lo))
    ax.set_ylim(max(-2.0, lo - pad), min(102.0, hi + pad))
    ticks = sorted(levels_all)
    ax.set_xticks(ticks, [f"{v:g}" for v in ticks], rotation=45 if len(ticks) > 8 else 0)
    ax.minorticks_off()
    if reverse_x:
        ax.invert_xaxis()
    ax.set_xlabel(f"{xlabel}   ({direction})" if direction else xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if has_clean:
        handles.append(Line2D([], [], color="gray", ls="--", lw=1.3))
        labels.append("clean accuracy")
    _legend_outside(ax, handles, labels)
    ax.set_title(title, fontsize=9)
    return fig


def plot_curves(path: str, curves: dict, *, xlabel: str, title: str = "", reverse_x: bool = False,
                errors: dict | None = None, direction: str = "stronger attack →") -> str:
    """Writes :func:`curves_figure` to ``path`` and returns the path written."""
    return save(curves_figure(curves, xlabel=xlabel, title=title, reverse_x=reverse_x,
                              errors=errors, direction=direction), path)


def plot_matrix(path: str, names: Sequence[str], matrix: ArrayLike, *,
                title: str = "accuracy (%) of target on source's examples") -> str:
    """Heat map of a transfer matrix (rows: source model, columns: target model)."""
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.1 * k + 2.5, 1.0 * k + 1.8))
    im = ax.imshow(100 * np.asarray(matrix), cmap="viridis", vmin=0, vmax=100)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{100 * matrix[i][j]:.1f}", ha="center", va="center",
                    color="w" if matrix[i][j] < 0.6 else "k", fontsize=8)
    ax.set_xticks(range(k), names, rotation=30, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("target (evaluated) model")
    ax.set_ylabel("source (attacked) model")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save(fig, path)


# Seed-fidelity figures (seed 001 gallery / filter slices / activation grids, seed 003 views).


def gallery(x: np.ndarray, y: ArrayLike, pred: ArrayLike, prob: ArrayLike,
            class_names: Sequence[str] | None = None, lo: float = 0.0, hi: float = 1.0,
            cols: int = 8) -> Figure:
    """Test images titled "T: true  P: predicted (p)"; wrong predictions in red."""
    def name(k):
        return class_names[k] if class_names else str(k)

    fig, axes = _grid(len(x), cols)
    for ax, img, t, p, q in zip(axes, x, y, pred, prob):
        _show(ax, img, f"T: {name(t)}  P: {name(p)}\n({q:.2f})", lo, hi)
        if t != p:
            ax.title.set_color("tab:red")
    acc = float(np.mean(np.asarray(y) == np.asarray(pred)))
    fig.suptitle(f"Test images, true (T) and predicted (P) labels: {acc:.0%} correct")
    return fig


def filter_slices(slices: np.ndarray, layer: str, index: int) -> Figure:
    """All input slices (kh, kw, cin) of one filter in a near-square grid, one colour
    scale."""
    cin = slices.shape[-1]
    rows, cols = grid_shape(cin)
    fig, axes = plt.subplots(rows, cols, figsize=(0.9 * cols + 1.4, 0.9 * rows + 0.6),
                             squeeze=False, layout="constrained")
    m = float(np.abs(slices).max()) or 1.0
    for c, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if c >= cin:
            ax.axis("off")
            continue
        im = ax.imshow(slices[:, :, c], cmap=SIGNED_CMAP, vmin=-m, vmax=m)
        ax.set_title(f"in {c}", fontsize=7)
    _colorbar(fig, im, axes.ravel().tolist(), "weight", shrink=0.7)
    fig.suptitle(f"{layer}: filter {index}, all {cin} input slices")
    return fig


def activation_grids(image: np.ndarray, maps: dict[str, np.ndarray],
                     title: str = "") -> Figure:
    """The input, then for each layer every channel in a near-square grid
    (:func:`grid_shape`: 32 channels -> 4x8), the figure sized to the channel counts."""
    names = list(maps)
    shapes = [grid_shape(maps[n].shape[-1]) for n in names]
    panel = 0.6
    widths = [2.6] + [cols * panel + 1.1 for _, cols in shapes]
    height = max(3.0, max(rows for rows, _ in shapes) * panel + 1.0)
    fig = plt.figure(figsize=(sum(widths), height), layout="constrained")
    subs = fig.subfigures(1, len(names) + 1, width_ratios=widths)
    _show(subs[0].subplots(), image, "input")
    for sub, name, (rows, cols) in zip(subs[1:], names, shapes):
        a = maps[name]
        n = a.shape[-1]
        axes = sub.subplots(rows, cols, squeeze=False)
        vmax = float(a.max()) or 1.0
        for c, ax in enumerate(axes.ravel()):
            ax.axis("off")
            if c < n:
                im = ax.imshow(a[..., c], cmap="viridis", vmin=0, vmax=vmax)
        _colorbar(sub, im, axes.ravel().tolist(), "activation", shrink=0.7)
        sub.suptitle(f"{name}: {n} channels ({rows}x{cols})", fontsize=9)
    fig.suptitle(title or "Activation maps")
    return fig


def segmentation(images: np.ndarray, maps: np.ndarray, masks: np.ndarray, titles: Sequence[str],
                 lo: float = 0.0, hi: float = 1.0) -> Figure:
    """Rows of image / saliency / GrabCut foreground (the image where the mask is set)."""
    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(1.5 * n + 0.8, 4.8), squeeze=False)
    for i in range(n):
        _show(axes[0, i], images[i], titles[i], lo, hi)
        axes[1, i].imshow(maps[i], cmap=MAGNITUDE_CMAP)
        axes[1, i].set_xticks([])
        axes[1, i].set_yticks([])
        cut = np.where(masks[i][..., None], images[i], lo)
        _show(axes[2, i], cut, f"{masks[i].mean():.0%} fg", lo, hi)
    axes[1, 0].set_ylabel("saliency", fontsize=8)
    axes[2, 0].set_ylabel("GrabCut", fontsize=8)
    fig.suptitle("GrabCut segmentation seeded by the saliency map")
    return fig


def clusters(points: np.ndarray, ids: np.ndarray, majority: np.ndarray, purity: float,
             class_names: Sequence[str] | None = None) -> Figure:
    """t-SNE points coloured by density cluster (noise in grey), each cluster marked with
    its majority class; legend outside the axes."""
    fig, ax = plt.subplots(figsize=(7.0, 5.0), layout="constrained")
    noise = ids < 0
    ax.scatter(points[noise, 0], points[noise, 1], s=6, c="lightgray", label="noise")
    styles = class_styles(max(1, len(majority)))
    for k, m in enumerate(majority):
        sel = ids == k
        color, marker = styles[k]
        ax.scatter(points[sel, 0], points[sel, 1], s=8, alpha=0.8, color=color, marker=marker,
                   label=f"cluster {k}: {_name(class_names, m)}")
        cx, cy = points[sel].mean(axis=0)
        ax.annotate(_name(class_names, m), (cx, cy), fontsize=9, weight="bold", ha="center")
    ax.set_title(f"Density clusters on the t-SNE map: {len(majority)} clusters, "
                 f"purity {purity:.1%}", fontsize=10)
    _legend_outside(ax, fontsize=7, ncol=max(1, int(np.ceil((len(majority) + 1) / 20))))
    return fig


def plot_certified_accuracy(path: str, radii: Sequence[float], curves: dict, *,
                            title: str = "") -> str:
    """Certified accuracy (%) against the L2 radius, one line per model (or sigma).

    Args:
      radii: the radii of the x axis.
      curves: ``{name: [certified accuracy in [0, 1] at each radius]}``.
    """
    fig, ax = plt.subplots(figsize=(6.2, 3.8), layout="constrained")
    for name, accs in curves.items():
        ax.step(radii, [100 * a for a in accs], where="post", marker="o", label=name)
    ax.set_xlabel("L2 radius   (larger radius →)")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    ax.set_title(title, fontsize=9)
    return save(fig, path)


def budget_label(params: dict) -> str | None:
    """A short budget text for figure titles from an attack's effective parameters:
    ``eps=0.1 (L∞)``, ``SNR 33 dB``, or None when the attack has no budget."""
    params = params or {}
    norm = {"inf": "L∞", "np.inf": "L∞", "2": "L2", "1": "L1"}.get(str(params.get("norm")), "")
    for key in ("eps", "epsilon"):
        if isinstance(params.get(key), (int, float)):
            return f"eps={params[key]:g}" + (f" ({norm})" if norm else "")
    for key in ("snr", "snr_db"):
        if isinstance(params.get(key), (int, float)):
            return f"SNR {params[key]:g} dB"
    return None
