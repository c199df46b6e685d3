"""Adversarial attacks with one calling convention (the cleverhans tf2 shape).

``attack(model_fn, x, <budget>, *, y=None, targeted=False, clip_min=0., clip_max=1.,
...) -> x_adv``: ``model_fn`` maps a batch to **logits**, ``x`` is a numpy array or tensor
in ``[clip_min, clip_max]``, the result is a float32 numpy array of the same shape.
``ATTACKS`` maps command-line names to these functions.

The gradient attacks (FGSM/FGM, BIM, PGD, MIM, SNR-FGSM) share one kernel,
``cnnvis_tf.attacks._steps``, which adversarial training runs inside its ``train_step``;
its building blocks for callers are public here: :func:`forward` (compiled logits),
:func:`gradient_direction`, :func:`fgm_step` and :func:`snr_step`.
"""

import inspect

from cnnvis_tf.attacks._common import forward, wrap_probabilities
from cnnvis_tf.attacks._steps import jit_compile
from cnnvis_tf.attacks.adversarial_patch import adversarial_patch, apply_patch, patch
from cnnvis_tf.attacks.apgd import apgd, apgd_ce, apgd_dlr, apgd_t
from cnnvis_tf.attacks.autoattack import AutoAttack, autoattack
from cnnvis_tf.attacks.basic_iterative_method import basic_iterative_method, bim
from cnnvis_tf.attacks.carlini_wagner_l2 import carlini_wagner_l2, cw_l2
from cnnvis_tf.attacks.deepfool import deepfool
from cnnvis_tf.attacks.fab import fab
from cnnvis_tf.attacks.fast_gradient_method import (
    fast_gradient_method,
    fgm_l2,
    fgm_step,
    fgsm,
    gradient_direction,
)
from cnnvis_tf.attacks.gaussian_noise import gaussian_noise
from cnnvis_tf.attacks.lbfgs import lbfgs
from cnnvis_tf.attacks.momentum_iterative_method import mim, momentum_iterative_method
from cnnvis_tf.attacks.noise_attacks import (
    apply_noise,
    class_from_noise,
    iterative_noise,
    noise_start,
    transfer_rate,
)
from cnnvis_tf.attacks.one_pixel import one_pixel
from cnnvis_tf.attacks.projected_gradient_descent import (
    default_step_size,
    pgd,
    pgd_l2,
    projected_gradient_descent,
)
from cnnvis_tf.attacks.snr_fgsm import snr_db, snr_fgsm, snr_step
from cnnvis_tf.attacks.spsa import spsa
from cnnvis_tf.attacks.square import square
from cnnvis_tf.attacks.universal_perturbation import universal, universal_perturbation
from cnnvis_tf.errors import InputError

ATTACKS = {
    "fgsm": fgsm,
    "fgm_l2": fgm_l2,
    "bim": bim,
    "pgd": pgd,
    "pgd_l2": pgd_l2,
    "mim": mim,
    "spsa": spsa,
    "cw_l2": cw_l2,
    "lbfgs": lbfgs,
    "snr_fgsm": snr_fgsm,
    "deepfool": deepfool,
    "universal": universal,
    "one_pixel": one_pixel,
    "patch": patch,
    "iterative_noise": iterative_noise,
    "gaussian_noise": gaussian_noise,
    "apgd_ce": apgd_ce,
    "apgd_dlr": apgd_dlr,
    "apgd_t": apgd_t,
    "fab": fab,
    "square": square,
    "autoattack": autoattack,
}

# The name of each attack's budget argument (None: no norm budget -- the attack minimizes
# the perturbation, or its size is set otherwise, e.g. pixels or patch_size).
BUDGET = {"cw_l2": None, "lbfgs": None, "snr_fgsm": "snr", "deepfool": None,
          "one_pixel": None, "patch": None, "iterative_noise": None}
# Image generators: no input image, one generated image per target class
# (``fn(model_fn, classes, input_shape, ...)``; seed 001's images grown from noise).
GENERATORS = {"class_from_noise": class_from_noise}
# Attacks that only make sense with targets (y=<targets> and targeted=True).
TARGETED_ONLY = ("lbfgs", "patch", "iterative_noise")


def budget_name(name):
    """The budget argument of attack ``name``: ``"eps"``, ``"snr"`` or None."""
    if name in GENERATORS:
        return None
    get_attack(name)
    return BUDGET.get(name, "eps")


def get_attack(name):
    """Looks up an attack by its registry name.

    Raises:
      InputError: ``name`` is not in :data:`ATTACKS`.
    """
    if name not in ATTACKS:
        raise InputError(
            f"Unknown attack {name!r}; choose one of: {', '.join(sorted(ATTACKS))}."
        )
    return ATTACKS[name]


def _parse_value(text):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("inf", "np.inf"):
        return float("inf")
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def attack_kwargs(name, *, eps=None, snr=None, params=""):
    """Builds keyword arguments for attack ``name`` from command-line style values.

    Args:
      name: registry name.
      eps: budget for attacks with an ``eps`` argument (None: the attack's default).
      snr: budget in dB for ``snr_fgsm`` (None: its default).
      params: extra arguments as ``"key=value,key=value"`` (ints, floats, true/false, inf).

    Raises:
      InputError: unknown attack, malformed ``params``, an argument the attack does not
        take, or a budget given to an attack without one.
    """
    fn = GENERATORS[name] if name in GENERATORS else get_attack(name)
    accepted = set(inspect.signature(fn).parameters)
    if name in _FRONT_OF:  # thin fronts: they take the full signature except norm
        accepted |= set(inspect.signature(_FRONT_OF[name]).parameters) - {"norm"}
    accepted -= {"model_fn", "x", "kwargs"}
    if name in GENERATORS:  # the script chooses these (--target_class, --like_index)
        accepted -= {"classes", "input_shape", "like"}
    kwargs = {}
    for item in filter(None, (p.strip() for p in (params or "").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"Malformed attack parameter {item!r}; write key=value pairs "
                             f"separated by commas, e.g. nb_iter=10,eps_iter=0.01.")
        kwargs[key.strip()] = _parse_value(value)
    budget = budget_name(name)
    for key, value in (("eps", eps), ("snr", snr)):
        if value is not None:
            if key != budget:
                hint = "it has no norm budget" if budget is None else f"use {budget}"
                raise InputError(f"Attack {name!r} takes no {key} budget; {hint}.")
            kwargs[key] = value
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise InputError(f"Attack {name!r} has no argument(s) {', '.join(unknown)}; it takes: "
                         f"{', '.join(sorted(accepted))}.")
    return kwargs


_FRONT_OF = {
    "fgsm": fast_gradient_method,
    "fgm_l2": fast_gradient_method,
    "pgd": projected_gradient_descent,
    "pgd_l2": projected_gradient_descent,
}

__all__ = [
    "ATTACKS",
    "attack_kwargs",
    "BUDGET",
    "budget_name",
    "get_attack",
    "wrap_probabilities",
    "forward",
    "gradient_direction",
    "fgm_step",
    "snr_step",
    "fast_gradient_method",
    "fgsm",
    "fgm_l2",
    "basic_iterative_method",
    "bim",
    "projected_gradient_descent",
    "pgd",
    "pgd_l2",
    "default_step_size",
    "momentum_iterative_method",
    "jit_compile",
    "mim",
    "spsa",
    "carlini_wagner_l2",
    "cw_l2",
    "lbfgs",
    "snr_fgsm",
    "snr_db",
    "deepfool",
    "universal",
    "universal_perturbation",
    "one_pixel",
    "patch",
    "adversarial_patch",
    "apply_patch",
    "iterative_noise",
    "apply_noise",
    "class_from_noise",
    "GENERATORS",
    "noise_start",
    "transfer_rate",
    "gaussian_noise",
    "TARGETED_ONLY",
    "apgd",
    "apgd_ce",
    "apgd_dlr",
    "apgd_t",
    "fab",
    "square",
    "autoattack",
    "AutoAttack",
]
