"""Robustness evaluation: accuracy curves, SNR tables, transfer matrices, sanity checks.

All functions take ``model_fn`` (callable returning logits), numpy inputs in
``[clip_min, clip_max]`` and true labels, and return plain Python/numpy values that the
``experiments/`` scripts write to JSON/CSV. Labels may be class ids of shape ``(N,)`` or
``(N, 1)``, or one-hot.

Attacks come only through the public :mod:`cnnvis_tf.attacks` API, whose gradient attacks
share one kernel with adversarial training: a sweep over budgets computes the gradient
direction once and applies the same step (:func:`~cnnvis_tf.attacks.fgm_step`,
:func:`~cnnvis_tf.attacks.snr_step`) as the single attacks.

Under ``with strategy.scope():`` every batch's forward pass, gradient and PGD loop is split
across the strategy's replicas (:mod:`cnnvis_tf.distribute`), with the same results. The
``correct_*``/``*_correct`` functions return per-example results, which parts of a set
(shards) concatenate into those of the whole set.
"""

import inspect
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cnnvis_tf.attacks import fgm_step, forward, get_attack, gradient_direction, snr_db, snr_step
from cnnvis_tf.checks import check_labels, check_nonneg, invalid
from cnnvis_tf.progress import Progress

__all__ = [
    "DEFAULT_SNR_LEVELS",
    "SNR_MODES",
    "predict_labels",
    "run_attack",
    "attack_metrics",
    "gradient_directions",
    "fgsm_sweep",
    "fgsm_sweep_correct",
    "accuracy_vs_eps",
    "correct_vs_eps",
    "accuracy_vs_snr",
    "correct_vs_snr",
    "finite_mean",
    "transfer_matrix",
    "aggregate_runs",
    "worst_case_accuracy",
    "sanity_flags",
    "sanity_checks",
    "sanity_correct",
    "sanity_summary",
]

DEFAULT_SNR_LEVELS = (50.0, 45.0, 40.0, 33.0)
# "clipped": the perturbation after clipping has the SNR (the package's convention, as
# attacks.snr_fgsm); "unclipped": seed 002's formula, before clipping (achieved SNR higher).
SNR_MODES = ("clipped", "unclipped")


def _batches(n, batch_size):
    return [slice(i, min(n, i + batch_size)) for i in range(0, n, int(batch_size))]


def predict_labels(model_fn: Callable, x: ArrayLike, batch_size: int = 256) -> np.ndarray:
    """Arg-max class of ``model_fn`` on ``x``, in batches (int64 numpy); compiled for a
    built Keras model."""
    return np.concatenate(
        [np.asarray(forward(model_fn, tf.constant(x[s], tf.float32))).argmax(axis=1)
         for s in _batches(len(x), batch_size)]
    ).astype(np.int64)


def run_attack(attack: str | Callable, model_fn: Callable, x: ArrayLike,
               y: ArrayLike | None = None, *, batch_size: int = 256,
               progress: bool = False, **kwargs) -> np.ndarray:
    """Runs ``attack`` (a registry name or function) over ``x`` in batches.

    ``y`` holds labels, or target classes when ``targeted=True`` is in ``kwargs``;
    ``progress`` prints ``k/N examples`` with elapsed time and ETA
    (:class:`cnnvis_tf.progress.Progress`: redrawn on a terminal, plain lines elsewhere),
    within a batch too for attacks that report their own progress (L-BFGS, CW, one-pixel).
    """
    fn = get_attack(attack) if isinstance(attack, str) else attack
    y = _labels(y, x)
    name = attack if isinstance(attack, str) else getattr(attack, "__name__", "attack")
    bar = Progress(len(x), name, unit="examples") if progress else None
    reports = bar is not None and kwargs.get("progress") is None and \
        "progress" in inspect.signature(fn).parameters
    out = []
    for s in _batches(len(x), batch_size):
        if reports:
            kwargs["progress"] = bar.sub(s.start, s.stop - s.start)
        out.append(fn(model_fn, x[s], y=None if y is None else y[s], **kwargs))
        if bar is not None:
            bar.update(s.stop)
    return np.concatenate(out).astype(np.float32)


def _labels(y, x):
    """Class ids of shape (N,) from ids (N,)/(N, 1) or one-hot (None stays None)."""
    return check_labels(y, len(x))


def _finite_stats(values):
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None, None
    return float(finite.mean()), float(np.median(finite))


def attack_metrics(y: ArrayLike, x: ArrayLike, x_adv: ArrayLike, pred_clean: ArrayLike,
                   pred_adv: ArrayLike, *, targets: ArrayLike | None = None) -> dict:
    """Summary numbers of one attack run (the ``metrics.json`` contract).

    ``success_rate`` is, untargeted, the fraction of correctly classified examples that
    the attack made wrong; targeted (``targets`` given), the fraction classified as their
    target. SNR means/medians skip unchanged images (infinite SNR); ``None`` if all are.
    """
    n = len(x)
    y = _labels(y, x)
    targets = _labels(targets, x)
    diff = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(n, -1)
    l2, linf = np.linalg.norm(diff, axis=1), np.abs(diff).max(axis=1)
    correct = pred_clean == y
    if targets is not None:
        success = float(np.mean(pred_adv == targets))
    else:
        success = float(np.mean(pred_adv[correct] != y[correct])) if correct.any() else 0.0
    mean_snr, median_snr = _finite_stats(snr_db(x, x_adv))
    return {
        "clean_accuracy": float(np.mean(correct)),
        "adversarial_accuracy": float(np.mean(pred_adv == y)),
        "success_rate": success,
        "mean_l2": float(l2.mean()),
        "median_l2": float(np.median(l2)),
        "mean_linf": float(linf.mean()),
        "median_linf": float(np.median(linf)),
        "mean_snr_db": mean_snr,
        "median_snr_db": median_snr,
        "num_examples": int(n),
    }


def gradient_directions(model_fn: Callable, x: ArrayLike, y: ArrayLike, *,
                        norm: float | int | str = np.inf, clip_min: float = 0.0,
                        clip_max: float = 1.0, batch_size: int = 256) -> np.ndarray:
    """FGSM/FGM step directions (``sign(grad)`` or unit-L2 grad), computed once.

    ``y`` are the true labels (the loss is their cross-entropy).
    """
    y = _labels(y, x)
    return np.concatenate([
        gradient_direction(model_fn, x[s], y[s], norm=norm, clip_min=clip_min,
                           clip_max=clip_max)
        for s in _batches(len(x), batch_size)
    ])


def fgsm_sweep(model_fn: Callable, x: ArrayLike, y: ArrayLike, eps_list: Sequence[float], *,
               norm: float | int | str = np.inf, clip_min: float = 0.0, clip_max: float = 1.0,
               batch_size: int = 256) -> list[float]:
    """Accuracy under FGSM/FGM for many ``eps`` with one gradient computation.

    Returns:
      list of accuracies, one per ``eps`` in ``eps_list``; equal to running
      ``fast_gradient_method(..., y=y)`` at each eps.

    References:
      Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015.
    """
    return [_mean(c) for c in fgsm_sweep_correct(
        model_fn, x, y, eps_list, norm=norm, clip_min=clip_min, clip_max=clip_max,
        batch_size=batch_size)]


def _mean(correct):
    return float(np.mean(correct))


def fgsm_sweep_correct(model_fn: Callable, x: ArrayLike, y: ArrayLike, eps_list: Sequence[float],
                       *, norm: float | int | str = np.inf, clip_min: float = 0.0,
                       clip_max: float = 1.0, batch_size: int = 256) -> list[np.ndarray]:
    """:func:`fgsm_sweep` per example: one boolean array (correct under FGSM) per ``eps``.
    Per-example results of parts of a set (shards) concatenate into those of the set."""
    eps_list = [check_nonneg("eps", e) for e in eps_list]
    y = _labels(y, x)
    direction = gradient_directions(model_fn, x, y, norm=norm, clip_min=clip_min,
                                    clip_max=clip_max, batch_size=batch_size)
    if not eps_list:
        return []
    correct = []
    # Predict every eps at once, in full batches of batch_size (eps x examples).
    for s in _batches(len(x), max(1, int(batch_size) // len(eps_list))):
        x_adv = np.concatenate([fgm_step(x[s], direction[s], eps, clip_min=clip_min,
                                         clip_max=clip_max) for eps in eps_list])
        pred = predict_labels(model_fn, x_adv, batch_size).reshape(len(eps_list), -1)
        correct.append(pred == y[s])
    return list(np.concatenate(correct, axis=1)) if correct else [
        np.zeros(0, bool) for _ in eps_list]


def accuracy_vs_eps(model_fn: Callable, x: ArrayLike, y: ArrayLike, eps_list: Sequence[float], *,
                    attack: str | Callable = "fgsm", clip_min: float = 0.0, clip_max: float = 1.0,
                    batch_size: int = 256, **attack_kwargs) -> dict:
    """``{"Clean": acc, eps: acc, ...}`` under ``attack`` (fgsm/fgm_l2 use one gradient)."""
    correct = correct_vs_eps(model_fn, x, y, eps_list, attack=attack, clip_min=clip_min,
                             clip_max=clip_max, batch_size=batch_size, **attack_kwargs)
    return {k: _mean(v) for k, v in correct.items()}


def correct_vs_eps(model_fn: Callable, x: ArrayLike, y: ArrayLike, eps_list: Sequence[float], *,
                   attack: str | Callable = "fgsm", clip_min: float = 0.0, clip_max: float = 1.0,
                   batch_size: int = 256, **attack_kwargs) -> dict:
    """:func:`accuracy_vs_eps` per example: ``{"Clean": bool array, eps: bool array}``."""
    y = _labels(y, x)
    result = {"Clean": predict_labels(model_fn, x, batch_size) == y}
    if attack in ("fgsm", "fgm_l2") and not attack_kwargs:
        norm = np.inf if attack == "fgsm" else 2
        correct = fgsm_sweep_correct(model_fn, x, y, eps_list, norm=norm, clip_min=clip_min,
                                     clip_max=clip_max, batch_size=batch_size)
        result.update(zip(eps_list, correct))
        return result
    for eps in eps_list:
        x_adv = run_attack(attack, model_fn, x, y, batch_size=batch_size, eps=eps,
                           clip_min=clip_min, clip_max=clip_max, **attack_kwargs)
        result[eps] = predict_labels(model_fn, x_adv, batch_size) == y
    return result


def accuracy_vs_snr(model_fn: Callable, x: ArrayLike, y: ArrayLike,
                    snr_levels: Sequence[float] = DEFAULT_SNR_LEVELS, *, clip_min: float = 0.0,
                    clip_max: float = 1.0, batch_size: int = 256,
                    snr_mode: str = "clipped") -> tuple[dict, dict]:
    """Seed-002 table row: accuracy clean and under SNR-bounded FGSM at each level (dB).

    One gradient per example, then at each level :func:`cnnvis_tf.attacks.snr_step` (the
    step of :func:`cnnvis_tf.attacks.snr_fgsm` with the true labels).

    Args:
      snr_levels: requested SNRs in dB (the table's columns).
      snr_mode: ``"clipped"`` (default): each image's step is solved so that the perturbation
        *after clipping* to the box has the requested SNR, so a column labelled 33 dB is
        33 dB (where the box allows it). ``"unclipped"``: seed 002's formula, exact before
        clipping; clipping then raises the achieved SNR. Label such columns accordingly.

    Returns:
      ``(accuracy, achieved)``: ``{"Clean": acc, 50.0: acc, ...}`` and the mean achieved
      SNR (dB, after clipping) per level.

    Raises:
      InputError: bad levels, mode or inputs.

    References:
      Seed document 002, section 3 (SNR-bounded FGSM).
    """
    correct, snrs = correct_vs_snr(model_fn, x, y, snr_levels, clip_min=clip_min,
                                   clip_max=clip_max, batch_size=batch_size, snr_mode=snr_mode)
    return ({k: _mean(v) for k, v in correct.items()},
            {k: _finite_stats(v)[0] for k, v in snrs.items()})


def correct_vs_snr(model_fn: Callable, x: ArrayLike, y: ArrayLike,
                   snr_levels: Sequence[float] = DEFAULT_SNR_LEVELS, *, clip_min: float = 0.0,
                   clip_max: float = 1.0, batch_size: int = 256,
                   snr_mode: str = "clipped") -> tuple[dict, dict]:
    """:func:`accuracy_vs_snr` per example: ``({"Clean": bool array, snr: bool array},
    {snr: achieved SNR (dB) of each image})``."""
    if snr_mode not in SNR_MODES:
        raise invalid("snr_mode", "one of " + ", ".join(map(repr, SNR_MODES)), snr_mode)
    y = _labels(y, x)
    direction = gradient_directions(model_fn, x, y, clip_min=clip_min, clip_max=clip_max,
                                    batch_size=batch_size)
    correct = {"Clean": predict_labels(model_fn, x, batch_size) == y}
    achieved = {}
    for snr in snr_levels:
        x_adv = snr_step(x, direction, snr, clip_min=clip_min, clip_max=clip_max,
                         match_clipped=snr_mode == "clipped")
        correct[snr] = predict_labels(model_fn, x_adv, batch_size) == y
        achieved[snr] = np.asarray(snr_db(x, x_adv), np.float64)
    return correct, achieved


def finite_mean(values: Iterable[float]) -> float | None:
    """Mean of the finite entries of ``values`` (None if there are none), e.g. the
    achieved SNR over images (an unchanged image has an infinite SNR)."""
    return _finite_stats(values)[0]


def transfer_matrix(models: dict[str, Callable], x: ArrayLike, y: ArrayLike,
                    attack: str | Callable = "fgsm", *, batch_size: int = 256,
                    **attack_kwargs) -> tuple[list[str], np.ndarray]:
    """Accuracy of every model on adversarial examples crafted on every model.

    Args:
      models: ``{name: model_fn}``.
      x: clean inputs; y: true labels.
      attack: registry name or function; ``attack_kwargs`` are passed to it.

    Returns:
      ``(names, matrix)``: ``matrix[i, j]`` is the accuracy of model ``j`` on examples
      crafted against model ``i`` (the diagonal is white-box accuracy).

    References:
      Papernot, McDaniel, Goodfellow. Transferability in Machine Learning. arXiv:1605.07277.
    """
    names = list(models)
    y = _labels(y, x)
    matrix = np.zeros((len(names), len(names)))
    for i, src in enumerate(names):
        x_adv = run_attack(attack, models[src], x, y, batch_size=batch_size, **attack_kwargs)
        for j, dst in enumerate(names):
            matrix[i, j] = np.mean(predict_labels(models[dst], x_adv, batch_size) == y)
    return names, matrix


def aggregate_runs(results: Sequence[dict]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single run) across runs of
    dicts with the same numeric keys."""
    if not len(results):
        raise invalid("results", "at least one run", results)
    out = {}
    for k in results[0].keys():
        values = np.asarray([r[k] for r in results], np.float64)
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        out[k] = {"mean": float(np.mean(values)), "std": std}
    return out


def worst_case_accuracy(model_fn: Callable, x: ArrayLike, y: ArrayLike, attacks: dict[str, tuple],
                        *, batch_size: int = 256) -> dict[str, float]:
    """Per-example worst case over several attacks.

    Args:
      attacks: ``{label: (attack name or function, kwargs)}``.

    Returns:
      ``{label: accuracy, ..., "worst_case": accuracy}``, where an example counts as
      robust only if it is classified correctly clean and under every attack.
    """
    y = _labels(y, x)
    robust = predict_labels(model_fn, x, batch_size) == y
    result = {}
    for label, (attack, kwargs) in attacks.items():
        x_adv = run_attack(attack, model_fn, x, y, batch_size=batch_size, **kwargs)
        correct = predict_labels(model_fn, x_adv, batch_size) == y
        result[label] = float(np.mean(correct))
        robust &= correct
    result["worst_case"] = float(np.mean(robust))
    return result


def sanity_flags(eps_list: Sequence[float], accuracies: Sequence[float], *,
                 single_step: float | None = None, iterative: float | None = None,
                 unbounded: float | None = None, tol: float = 0.02,
                 unbounded_max: float = 0.1) -> dict:
    """Signs of gradient masking or a broken evaluation (Carlini et al. 2019, sec. 5).

    Args:
      eps_list, accuracies: an accuracy curve over increasing budgets.
      single_step, iterative: accuracies under a one-step and an iterative attack at the
        same budget (iterative should not be weaker).
      unbounded: accuracy under an attack with a budget covering the whole input box
        (should be near 0).
      tol: slack for the two comparisons; unbounded_max: threshold for the last check.

    Returns:
      ``{"accuracy_increases_with_eps": bool, "iterative_weaker_than_single_step": bool,
      "unbounded_attack_fails": bool, "ok": bool, "messages": [...]}``; a True flag is a
      warning.

    References:
      Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras, Goodfellow, Madry, Kurakin.
      On Evaluating Adversarial Robustness. arXiv:1902.06705.
    """
    order = np.argsort(np.asarray(eps_list, np.float64))
    accs = np.asarray(accuracies, np.float64)[order]
    flags = {
        "accuracy_increases_with_eps": bool(np.any(np.diff(accs) > tol)),
        "iterative_weaker_than_single_step": bool(
            single_step is not None and iterative is not None and iterative > single_step + tol
        ),
        "unbounded_attack_fails": bool(unbounded is not None and unbounded > unbounded_max),
    }
    text = {
        "accuracy_increases_with_eps": "accuracy rises with a larger budget",
        "iterative_weaker_than_single_step": "the iterative attack is weaker than one step",
        "unbounded_attack_fails": "an attack with an unbounded budget leaves accuracy high",
    }
    messages = [text[k] + " (possible gradient masking)" for k, v in flags.items() if v]
    return {**flags, "ok": not messages, "messages": messages}


def sanity_checks(model_fn: Callable, x: ArrayLike, y: ArrayLike, eps_list: Sequence[float], *,
                  clip_min: float = 0.0, clip_max: float = 1.0, nb_iter: int = 10,
                  batch_size: int = 256, tol: float = 0.02, unbounded_max: float = 0.1) -> dict:
    """Runs the attacks behind :func:`sanity_flags` and returns its result plus the numbers.

    FGSM over ``eps_list`` (one gradient), PGD at ``max(eps_list)`` (random start, seed 0),
    and BIM with ``eps = clip_max - clip_min`` (the whole box; no random start, so a model
    with zero gradients keeps its accuracy and the flag fires).
    """
    correct = sanity_correct(model_fn, x, y, eps_list, clip_min=clip_min, clip_max=clip_max,
                             nb_iter=nb_iter, batch_size=batch_size)
    return sanity_summary(eps_list, correct, tol=tol, unbounded_max=unbounded_max)


def sanity_correct(model_fn: Callable, x: ArrayLike, y: ArrayLike, eps_list: Sequence[float], *,
                   clip_min: float = 0.0, clip_max: float = 1.0, nb_iter: int = 10,
                   batch_size: int = 256) -> dict:
    """The attacks of :func:`sanity_checks`, per example: ``{"fgsm": [bool array per
    eps], "pgd": bool array, "unbounded_bim": bool array}`` (correct under each)."""
    if not len(eps_list):
        raise invalid("eps_list", "at least one budget", eps_list)
    y = _labels(y, x)
    eps_max, span = float(max(eps_list)), float(clip_max) - float(clip_min)
    box = {"clip_min": clip_min, "clip_max": clip_max, "nb_iter": nb_iter}

    def correct(attack, **kwargs):
        x_adv = run_attack(attack, model_fn, x, y, batch_size=batch_size, **box, **kwargs)
        return predict_labels(model_fn, x_adv, batch_size) == y

    return {"fgsm": fgsm_sweep_correct(model_fn, x, y, eps_list, clip_min=clip_min,
                                       clip_max=clip_max, batch_size=batch_size),
            "pgd": correct("pgd", eps=eps_max, seed=0),
            "unbounded_bim": correct("bim", eps=span, eps_iter=span / 10)}


def sanity_summary(eps_list: Sequence[float], correct: dict, *, tol: float = 0.02,
                   unbounded_max: float = 0.1) -> dict:
    """:func:`sanity_checks`' result from :func:`sanity_correct`'s per-example arrays."""
    accs = [_mean(c) for c in correct["fgsm"]]
    iterative, unbounded = _mean(correct["pgd"]), _mean(correct["unbounded_bim"])
    flags = sanity_flags(eps_list, accs, single_step=accs[int(np.argmax(eps_list))],
                         iterative=iterative, unbounded=unbounded, tol=tol,
                         unbounded_max=unbounded_max)
    numbers = {"fgsm_accuracy": dict(zip(map(float, eps_list), accs)),
               "pgd_accuracy_at_max_eps": iterative, "unbounded_bim_accuracy": unbounded}
    return {**flags, **numbers}
