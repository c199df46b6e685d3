"""Figures for every visualization (the only module that imports matplotlib; Agg backend).

Every function takes numbers computed elsewhere and returns a ``matplotlib`` figure;
:func:`save` writes and closes it.
"""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save(fig, path):
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


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


def _grid(n, cols):
    cols = max(1, min(cols, n))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 1, 1.3 * rows + 0.6),
                             squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def filters(kernel, rgb, layer):
    """First layer: one image per filter (min-max scaled). Deeper: kernel slices, rows =
    filters, columns = input channels, one diverging colour scale with a colour bar."""
    kh, kw, cin, cout = kernel.shape
    if rgb:
        fig, axes = _grid(cout, 8)
        for f in range(cout):
            k = kernel[..., f]
            _show(axes[f], (k - k.min()) / (np.ptp(k) or 1.0), f"filter {f}")
        fig.suptitle(f"{layer}: {cout} filters ({kh}x{kw}x{cin}), min-max scaled")
        return fig
    cout = min(cout, 16)
    fig, axes = plt.subplots(cout, cin, figsize=(1.0 * cin + 1.5, 1.0 * cout + 0.6),
                             squeeze=False)
    m = float(np.abs(kernel).max()) or 1.0
    for f in range(cout):
        for c in range(cin):
            im = axes[f, c].imshow(kernel[:, :, c, f], cmap="bwr", vmin=-m, vmax=m)
            axes[f, c].set_xticks([])
            axes[f, c].set_yticks([])
            if f == 0:
                axes[f, c].set_title(f"in {c}", fontsize=7)
        axes[f, 0].set_ylabel(f"out {f}", fontsize=7)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="weight")
    fig.suptitle(f"{layer}: kernel slices (rows: filters, columns: input channels)")
    return fig


def activations(image, maps, title="", max_channels=16):
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
        fig.colorbar(im, ax=axes[r].tolist(), shrink=0.8, label="activation")
    fig.suptitle(title or "Activation maps")
    return fig


def occlusion(image, result, patch, class_names):
    """Image with the patch grid, heat map of the true-class probability, and the table."""
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=(12, 4), layout="constrained",
                                     gridspec_kw={"width_ratios": [1, 1.2, 1.4]})
    name = class_names[result.label] if class_names else str(result.label)
    _show(a0, image, f"input (true class: {name}, p={result.base_prob:.3f})")
    for r, c in result.positions:
        a0.add_patch(plt.Rectangle((c - 0.5, r - 0.5), patch, patch, fill=False, lw=0.6,
                                   ec="tab:red", alpha=0.6))
    im = a1.imshow(result.heatmap, cmap="magma", vmin=0, vmax=1)
    a1.set_title("P(true class), patch at each position", fontsize=9)
    nr, nc = result.heatmap.shape
    cols, rows = sorted(set(result.positions[:, 1])), sorted(set(result.positions[:, 0]))
    a1.set_xticks(range(nc), [str(c) for c in cols])
    a1.set_yticks(range(nr), [str(r) for r in rows])
    a1.set_xlabel("patch left column (pixels)")
    a1.set_ylabel("patch top row (pixels)")
    fig.colorbar(im, ax=a1, label="probability")
    a2.axis("off")
    rows = result.table()[:24]
    cells = [[f"({t['row']},{t['col']})", f"{t['true_class_prob']:.3f}",
              class_names[t["predicted_class"]] if class_names else t["predicted_class"]]
             for t in rows]
    tab = a2.table(cellText=cells, colLabels=["patch (row,col)", "P(true)", "predicted"],
                   loc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(7)
    a2.set_title("positions (first 24)" if len(result.true_prob) > 24 else "positions")
    return fig


def attribution(image, maps, title, label="attribution", signed=False, overlay=False):
    """The image, then one map per row of ``maps`` (N=1 shown), with a colour bar."""
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(7, 3.4), layout="constrained")
    _show(a0, image, "input")
    m = np.asarray(maps, dtype="float32")
    if signed:
        m = m.sum(axis=-1) if m.ndim == 3 else m
        v = float(np.abs(m).max()) or 1.0
        im = a1.imshow(m, cmap="bwr", vmin=-v, vmax=v)
    else:
        if overlay:
            a1.imshow(_img(image), cmap="gray", vmin=0, vmax=1)
        im = a1.imshow(m, cmap="jet" if overlay else "hot", alpha=0.5 if overlay else 1.0)
    a1.set_xticks([])
    a1.set_yticks([])
    a1.set_title(label, fontsize=9)
    fig.colorbar(im, ax=a1, label=label)
    fig.suptitle(title)
    return fig


def images(imgs, titles, title, cols=8, lo=0.0, hi=1.0):
    """A grid of images in the model's input range, each titled."""
    fig, axes = _grid(len(imgs), cols)
    for ax, img, t in zip(axes, imgs, titles):
        _show(ax, np.nan_to_num(img, nan=lo), t, lo, hi)
    fig.suptitle(title)
    return fig


def curve(x, ys, xlabel, ylabel, title, vlines=()):
    """Line plot of several named series ``ys`` = {label: values} against ``x``."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, y in ys.items():
        ax.plot(x, y, marker=".", label=name)
    for v in vlines:
        ax.axvline(v, color="gray", ls=":", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def series(lines, xlabel, ylabel, title):
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


def loss_2d(a, b, loss, title):
    """Filled contour of the loss surface with a colour bar; the trained model at (0, 0)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    cs = ax.contourf(a, b, loss, levels=20, cmap="viridis")
    ax.contour(a, b, loss, levels=20, colors="k", linewidths=0.3)
    ax.plot([0], [0], "r*", ms=10, label="trained weights")
    fig.colorbar(cs, ax=ax, label="cross-entropy loss")
    ax.set_xlabel("direction 1 (filter-normalized)")
    ax.set_ylabel("direction 2 (filter-normalized)")
    ax.set_title(title)
    ax.legend(loc="upper right")
    return fig


def embedding(points, labels, class_names, title, xlabel="dim 1", ylabel="dim 2"):
    """Scatter of 2-D points coloured by class, with a legend."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for k in np.unique(labels):
        sel = labels == k
        name = class_names[k] if class_names and k < len(class_names) else str(k)
        ax.scatter(points[sel, 0], points[sel, 1], s=8, label=name, alpha=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, markerscale=2, loc="best")
    return fig


def neighbors(x, queries, feat_idx, pix_idx, lo=0.0, hi=1.0):
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


def adversarial(res, lo=0.0, hi=1.0):
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
            im = ax.imshow(s, cmap="bwr", vmin=-v, vmax=v)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"group {key.split('/', 1)[1]}: {t}", fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.8, label="deconvnet projection")
    fig.suptitle(f"Clean vs adversarial (projections from {res['project_layer']})")
    return fig


# Attack and robustness figures: each writes one PNG and returns its path.


def _img_clipped(a, lo, hi):
    a = np.clip((np.asarray(a, np.float32) - lo) / ((hi - lo) or 1.0), 0.0, 1.0)
    return a[..., 0] if a.shape[-1] == 1 else a


def plot_examples(path, x, x_adv, y, pred_clean, pred_adv, class_names, *, n=8,
                  clip_min=0.0, clip_max=1.0, conf_clean=None, conf_adv=None):
    """Rows: clean image, adversarial image, perturbation (amplified to full range, as in
    seed 004 Fig. 2). ``conf_*``: softmax probability of each predicted label, if given."""
    n = max(1, min(n, len(x)))

    def conf(c, i):
        return "" if c is None else f" ({float(c[i]):.2f})"

    fig, axes = plt.subplots(3, n, figsize=(1.4 * n + 0.8, 4.6), squeeze=False)
    for i in range(n):
        delta = np.asarray(x_adv[i], np.float32) - x[i]
        scale = float(np.abs(delta).max()) or 1.0
        panels = [
            (_img_clipped(x[i], clip_min, clip_max),
             f"y={class_names[y[i]]} p={class_names[pred_clean[i]]}{conf(conf_clean, i)}"),
            (_img_clipped(x_adv[i], clip_min, clip_max),
             f"adv p={class_names[pred_adv[i]]}{conf(conf_adv, i)}"),
            (_img_clipped(0.5 + 0.5 * delta / scale, 0.0, 1.0), f"|d|max={scale:.3g}"),
        ]
        for row, (img, title) in enumerate(panels):
            ax = axes[row, i]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("clean / adversarial / perturbation", fontsize=9)
    return save(fig, path)


def plot_curves(path, curves, *, xlabel, title="", reverse_x=False, errors=None):
    """Accuracy (%) against budget, one line per model.

    Args:
      curves: ``{model name: {budget: accuracy in [0, 1]}}`` (a "Clean" key is skipped).
      errors: optional ``{model name: {budget: std}}`` drawn as error bars.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, curve in curves.items():
        levels = [k for k in curve if k != "Clean"]
        yerr = None if errors is None else [100 * errors[name][k] for k in levels]
        ax.errorbar(levels, [100 * curve[k] for k in levels], yerr=yerr, marker="o",
                    capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    if reverse_x:
        ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return save(fig, path)


def plot_matrix(path, names, matrix, *, title="accuracy (%) of target on source's examples"):
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


def _sqrt_grid(n):
    cols = int(np.ceil(np.sqrt(n)))
    return cols, int(np.ceil(n / cols))


def gallery(x, y, pred, prob, class_names=None, lo=0.0, hi=1.0, cols=8):
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


def filter_slices(slices, layer, index):
    """All input slices (kh, kw, cin) of one filter in a ~sqrt(cin) grid, one colour scale."""
    cin = slices.shape[-1]
    cols, rows = _sqrt_grid(cin)
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols + 1.4, 1.1 * rows + 0.6),
                             squeeze=False, layout="constrained")
    m = float(np.abs(slices).max()) or 1.0
    for c, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if c >= cin:
            ax.axis("off")
            continue
        im = ax.imshow(slices[:, :, c], cmap="bwr", vmin=-m, vmax=m)
        ax.set_title(f"in {c}", fontsize=7)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7, label="weight")
    fig.suptitle(f"{layer}: filter {index}, all {cin} input slices")
    return fig


def activation_grids(image, maps, title=""):
    """The input, then for each layer every channel in a ~sqrt(channels) grid."""
    names = list(maps)
    fig = plt.figure(figsize=(4.5 * len(names) + 2.2, 4.8), layout="constrained")
    subs = fig.subfigures(1, len(names) + 1, width_ratios=[0.45] + [1] * len(names))
    _show(subs[0].subplots(), image, "input")
    for sub, name in zip(subs[1:], names):
        a = maps[name]
        n = a.shape[-1]
        cols, rows = _sqrt_grid(n)
        axes = sub.subplots(rows, cols, squeeze=False)
        vmax = float(a.max()) or 1.0
        for c, ax in enumerate(axes.ravel()):
            ax.axis("off")
            if c < n:
                im = ax.imshow(a[..., c], cmap="viridis", vmin=0, vmax=vmax)
        sub.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7, label="activation")
        sub.suptitle(f"{name}: {n} channels ({rows}x{cols})", fontsize=9)
    fig.suptitle(title or "Activation maps")
    return fig


def segmentation(images, maps, masks, titles, lo=0.0, hi=1.0):
    """Rows of image / saliency / GrabCut foreground (the image where the mask is set)."""
    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(1.5 * n + 0.8, 4.8), squeeze=False)
    for i in range(n):
        _show(axes[0, i], images[i], titles[i], lo, hi)
        axes[1, i].imshow(maps[i], cmap="hot")
        axes[1, i].set_xticks([])
        axes[1, i].set_yticks([])
        cut = np.where(masks[i][..., None], images[i], lo)
        _show(axes[2, i], cut, f"{masks[i].mean():.0%} fg", lo, hi)
    axes[1, 0].set_ylabel("saliency", fontsize=8)
    axes[2, 0].set_ylabel("GrabCut", fontsize=8)
    fig.suptitle("GrabCut segmentation seeded by the saliency map")
    return fig


def clusters(points, ids, majority, purity, class_names=None):
    """t-SNE points coloured by density cluster (noise in grey), each cluster marked with
    its majority class."""
    fig, ax = plt.subplots(figsize=(6, 5))
    noise = ids < 0
    ax.scatter(points[noise, 0], points[noise, 1], s=6, c="lightgray", label="noise")
    for k, m in enumerate(majority):
        sel = ids == k
        ax.scatter(points[sel, 0], points[sel, 1], s=8, alpha=0.8)
        cx, cy = points[sel].mean(axis=0)
        ax.annotate(class_names[m] if class_names else str(m), (cx, cy), fontsize=9,
                    weight="bold", ha="center")
    ax.set_title(f"Density clusters on the t-SNE map: {len(majority)} clusters, "
                 f"purity {purity:.1%}", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return fig


def plot_certified_accuracy(path, radii, curves, *, title=""):
    """Certified accuracy (%) against the L2 radius, one line per model (or sigma).

    Args:
      radii: the radii of the x axis.
      curves: ``{name: [certified accuracy in [0, 1] at each radius]}``.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, accs in curves.items():
        ax.step(radii, [100 * a for a in accs], where="post", marker="o", label=name)
    ax.set_xlabel("L2 radius")
    ax.set_ylabel("certified accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return save(fig, path)
