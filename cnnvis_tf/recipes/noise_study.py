"""Seed 001's noise experiments as protocols: images grown from noise towards each class
(plain, and with the MSE term to a reference image), and one image's added noise re-used
on other images.

References:
  Sahoo, "EE6132 Assignment 2: Convolutional Neural Networks", 2019 (seed document 001),
  sections 4.1-4.3, figures 11-16.
  Goodfellow, Shlens, Szegedy. "Explaining and harnessing adversarial examples." ICLR 2015.
"""

import numpy as np
from keras import ops

from cnnvis_tf import attacks, evaluation
from cnnvis_tf.errors import InputError

__all__ = ["target_rows", "class_from_noise_study", "noise_reuse_study", "figure_panels"]

_PLAIN_KEYS = ("steps", "learning_rate", "noise_mean", "noise_std", "seed")


def _probabilities(model, images):
    return np.asarray(ops.softmax(ops.cast(model(images), "float32")), "float64")


def target_rows(model, images, classes, like=None):
    """Per generated image: its target, the predicted class, whether the target was reached,
    the target's softmax probability ("confidence") and, with ``like``, the MSE and L2
    distance to it."""
    prob = _probabilities(model, images)
    rows = []
    for i, c in enumerate(np.asarray(classes).reshape(-1)):
        row = {"target": int(c), "predicted": int(prob[i].argmax()),
               "reached": bool(prob[i].argmax() == c), "confidence": float(prob[i, c])}
        if like is not None:
            d = np.asarray(images[i], "float64") - np.asarray(like, "float64")
            row.update(mse_to_reference=float(np.mean(d**2)),
                       l2_to_reference=float(np.sqrt(np.sum(d**2))))
        rows.append(row)
    return rows


def _summary(rows):
    out = {"reached": int(sum(r["reached"] for r in rows)), "num_targets": len(rows),
           "mean_confidence": float(np.mean([r["confidence"] for r in rows]))}
    if rows and "mse_to_reference" in rows[0]:
        out["mean_mse_to_reference"] = float(np.mean([r["mse_to_reference"] for r in rows]))
        out["mean_l2_to_reference"] = float(np.mean([r["l2_to_reference"] for r in rows]))
    return out


def class_from_noise_study(model, classes, input_shape, *, like=None, compare_plain=True,
                           clip_min=0.0, clip_max=1.0, **kwargs) -> dict:
    """Runs :func:`cnnvis_tf.attacks.class_from_noise` for ``classes`` and reports, per
    target, whether it was reached and with what confidence (seed 001, figs. 11-13).

    With ``like`` and ``compare_plain``, the plain attack (no MSE term) is run from the same
    starting noise with the same steps, so the distances to the reference compare.

    Returns:
      dict: ``images``, ``start`` (the starting noise), ``targets`` (:func:`target_rows`)
      and its summary (``reached``, ``num_targets``, ``mean_confidence``, mean distances);
      with the plain comparison also ``plain_images``, ``plain`` (rows and summary) and
      ``closer_than_plain`` (the mean MSE to ``like`` is smaller).
    """
    classes = np.asarray(classes, np.int64).reshape(-1)
    box = {"clip_min": clip_min, "clip_max": clip_max}
    images = attacks.class_from_noise(model, classes, input_shape, like=like, **box, **kwargs)
    start_kwargs = {k: kwargs[k] for k in ("noise_mean", "noise_std", "seed") if k in kwargs}
    out = {"images": images,
           "start": attacks.noise_start((len(classes),) + tuple(input_shape), **start_kwargs,
                                        **box)}
    rows = target_rows(model, images, classes, like)
    out.update(targets=rows, **_summary(rows))
    if like is not None and compare_plain:
        plain_kwargs = {k: v for k, v in kwargs.items() if k in _PLAIN_KEYS}
        plain = attacks.class_from_noise(model, classes, input_shape, **box, **plain_kwargs)
        plain_rows = target_rows(model, plain, classes, like)
        out["plain_images"] = plain
        out["plain"] = {"targets": plain_rows, **_summary(plain_rows)}
        out["closer_than_plain"] = bool(out["mean_mse_to_reference"]
                                        < out["plain"]["mean_mse_to_reference"])
    return out


def noise_reuse_study(model, x_source, target, x_others, y_others=None, *, confidence=None,
                      clip_min=0.0, clip_max=1.0, **kwargs) -> dict:
    """Seed 001 figs. 14-16: noise is added to ``x_source`` step by step
    (:func:`cnnvis_tf.attacks.iterative_noise`, until the target's probability reaches
    ``confidence`` when given), then the same noise is added to ``x_others``.

    Returns:
      dict: ``source_adv``, ``noise``, ``source_reached``, ``source_confidence`` (target
      probability of the noisy source), ``noisy`` (the other images with the noise),
      ``pred_clean``, ``pred_noisy``, ``fraction_predicted_as_target`` and
      ``transfer_rate`` (:func:`cnnvis_tf.attacks.transfer_rate`: among the others whose
      label is not the target), ``num_counted``.
    """
    x_source = np.asarray(x_source, np.float32)[None]
    if len(x_others) == 0:
        raise InputError("Noise reuse needs other images to add the noise to; attack more "
                         "than one image (--num_examples).")
    box = {"clip_min": clip_min, "clip_max": clip_max}
    src_adv = attacks.iterative_noise(model, x_source, y=np.array([int(target)]),
                                      confidence=confidence, **box, **kwargs)
    prob = _probabilities(model, src_adv)[0]
    noise = src_adv[0] - x_source[0]
    noisy = attacks.apply_noise(x_others, noise, **box)
    pred_noisy = evaluation.predict_labels(model, noisy)
    counted = (len(x_others) if y_others is None
               else int(np.sum(np.asarray(y_others) != int(target))))
    return {"source_adv": src_adv[0], "noise": noise,
            "source_reached": bool(prob.argmax() == int(target)),
            "source_confidence": float(prob[int(target)]),
            "noisy": noisy, "pred_clean": evaluation.predict_labels(model, x_others),
            "pred_noisy": pred_noisy,
            "fraction_predicted_as_target": float(np.mean(pred_noisy == int(target))),
            "transfer_rate": attacks.transfer_rate(pred_noisy, int(target), y_others),
            "num_counted": counted}


def figure_panels(study, like=None, class_names=None):
    """``(images, titles)`` of the seed-001 figure: the reference (if any), then one image
    per target titled ``target -> predicted (confidence)``, then the plain images."""
    def name(k):
        return class_names[k] if class_names else str(k)

    imgs, titles = [], []
    if like is not None:
        imgs.append(np.asarray(like))
        titles.append("reference")
    for label, images, rows in (("", study["images"], study["targets"]),
                                ("plain ", study.get("plain_images"),
                                 study.get("plain", {}).get("targets"))):
        if images is None:
            continue
        for img, r in zip(images, rows):
            imgs.append(img)
            mark = "" if r["reached"] else " ✗"
            titles.append(f"{label}{name(r['target'])}→{name(r['predicted'])} "
                          f"{r['confidence']:.2f}{mark}")
    return imgs, titles
