"""AutoAttack: an ensemble of parameter-free attacks, each run on the points still robust.

Versions (Croce & Hein 2020; the reference's settings):

- ``standard``: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries);
  100 iterations, 1 restart each.
- ``plus``: APGD-CE and APGD-DLR (5 restarts), FAB (5 restarts), Square, APGD-T, FAB-T.
- ``rand`` (randomized defenses): APGD-CE and APGD-DLR with EOT over 20 draws.

An example counts as robust only if it is classified correctly clean and no attack breaks
it (per-point worst case). ``state_path`` stores progress after every attack, so a long
evaluation resumes where it stopped. The reference's automatic checks (randomness,
probability outputs, zero gradients, Square beating the white-box attacks, number of
classes, input-dependent forward passes) are returned with the numbers.
"""

import hashlib
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import logging
from numpy.typing import ArrayLike

from cnnvis_tf import rundir
from cnnvis_tf.attacks import _steps
from cnnvis_tf.attacks._common import check_norm, finish, forward, prepare
from cnnvis_tf.attacks.apgd import run_apgd, run_apgd_t
from cnnvis_tf.attacks.fab import run_fab
from cnnvis_tf.attacks.square import run_square
from cnnvis_tf.checks import check_positive_int, invalid, looks_like_probabilities

__all__ = ["autoattack", "AutoAttack", "VERSIONS", "run_checks"]

VERSIONS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
_RESTARTS = {"standard": 1, "plus": 5, "rand": 1}


# Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse
# parameter-free attacks. ICML 2020.
class AutoAttack:
    """AutoAttack on one model; :meth:`run` returns the adversarial batch and a report.

    Args:
      model_fn: callable mapping a batch to logits (probabilities are detected, flagged
        and converted to log-probabilities).
      eps: radius of the norm ball.
      norm: ``np.inf`` or ``2``.
      version: ``"standard"``, ``"plus"`` or ``"rand"``.
      attacks_to_run: override the version's attack list (names as in :data:`VERSIONS`).
      nb_iter: APGD/FAB iterations (100).
      n_queries: Square's query budget (5000).
      n_target_classes: targets of APGD-T and FAB-T (9).
      n_restarts: restarts of APGD/FAB (default by version: 1, plus 5).
      eot_iter: EOT draws of APGD in ``rand`` (20; 1 otherwise).
      seed: seed of every random choice.
      clip_min, clip_max: the input box.
      batch_size: examples per attack call.
      state_path: ``.npz`` file of the progress (resumed when it matches the run).
      verbose: log each attack's robust accuracy and the cumulative time.
    """

    def __init__(self, model_fn: Callable, eps: float = 0.3, *, norm: float | int | str = np.inf,
                 version: str = "standard", attacks_to_run: Sequence[str] | None = None,
                 nb_iter: int = 100, n_queries: int = 5000, n_target_classes: int = 9,
                 n_restarts: int | None = None, eot_iter: int | None = None, seed: int = 0,
                 clip_min: float = 0.0, clip_max: float = 1.0, batch_size: int = 500,
                 state_path: str | None = None, verbose: bool = True):
        if version not in VERSIONS:
            raise invalid("version", "one of " + ", ".join(map(repr, VERSIONS)), version)
        names = tuple(attacks_to_run or VERSIONS[version])
        known = {a for v in VERSIONS.values() for a in v}
        if not names or set(names) - known:
            raise invalid("attacks_to_run", "names among " + ", ".join(sorted(known)),
                          attacks_to_run)
        self.model_fn, self.eps, self.norm, self.version = model_fn, eps, check_norm(norm), version
        self.attacks_to_run = names
        self.nb_iter = check_positive_int("nb_iter", nb_iter)
        self.n_queries = check_positive_int("n_queries", n_queries)
        self.n_target_classes = check_positive_int("n_target_classes", n_target_classes)
        self.n_restarts = check_positive_int("n_restarts", n_restarts or _RESTARTS[version])
        self.eot_iter = check_positive_int("eot_iter", eot_iter or (20 if version == "rand"
                                                                    else 1))
        self.seed, self.clip_min, self.clip_max = seed, clip_min, clip_max
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.state_path, self.verbose = state_path, verbose

    def _component(self, name, model_fn, x, y, logits):
        """One attack on a batch of still-robust points: ``(x_adv, found, queries)``."""
        box = {"clip_min": self.clip_min, "clip_max": self.clip_max}
        seed = None if self.seed is None else int(self.seed) + sum(map(ord, name))
        restarts = 1 if name in ("apgd-t", "fab-t") else self.n_restarts
        if name in ("apgd-ce", "apgd-dlr"):
            adv, found = run_apgd(model_fn, x, y, self.eps, nb_iter=self.nb_iter,
                                  norm=self.norm, loss=name[5:], n_restarts=restarts,
                                  eot_iter=self.eot_iter, seed=seed, **box)
        elif name == "apgd-t":
            adv, found = run_apgd_t(model_fn, x, y, logits, self.eps, nb_iter=self.nb_iter,
                                    norm=self.norm, n_target_classes=self.n_target_classes,
                                    n_restarts=restarts, eot_iter=self.eot_iter, seed=seed,
                                    **box)
        elif name in ("fab", "fab-t"):
            adv, found = run_fab(model_fn, x, y, logits, self.eps, nb_iter=self.nb_iter,
                                 norm=self.norm, n_restarts=restarts, seed=seed,
                                 n_target_classes=self.n_target_classes if name == "fab-t"
                                 else 0, **box)
        else:
            adv, found, queries = run_square(model_fn, x.numpy(), y.numpy(), self.eps,
                                             n_queries=self.n_queries, norm=self.norm,
                                             seed=seed, **box)
            return adv, found, queries
        return adv, found, None

    def run(self, x: ArrayLike, y: ArrayLike | None = None, *,
            from_probabilities: bool = False) -> tuple[np.ndarray, dict]:
        """Attacks ``x`` (labels ``y``; ``None``: predictions).

        Returns:
          ``(x_adv, report)``: float32 numpy batch (the original where no attack
          succeeded; with EOT, the last candidate) and ``{"clean_accuracy", "robust_accuracy", "robust_accuracy_by_attack",
          "seconds_by_attack", "square_queries", "checks", ...}``.
        """
        probs = _outputs_probabilities(self.model_fn, x)
        model_fn, x_t, y_t, logits = prepare(
            self.model_fn, x, y=y, clip_min=self.clip_min, clip_max=self.clip_max,
            from_probabilities=from_probabilities, eps=self.eps)  # converts and logs probs
        checks = run_checks(model_fn, x_t, y_t, logits, probabilities=probs,
                            n_target_classes=self.n_target_classes,
                            attacks_to_run=self.attacks_to_run)
        for msg in checks["messages"]:
            if "probabilities" not in msg:  # prepare has logged that one
                logging.warning("AutoAttack check: %s", msg)
        x_np, y_np = x_t.numpy(), y_t.numpy()
        state = self._load_state(x_np, y_np)
        if state is None:
            robust = logits.argmax(1) == y_np
            state = {"x_adv": x_np.copy(), "robust": robust, "done": [],
                     "acc": [float(robust.mean())], "seconds": [0.0], "queries": None}
        clean = state["acc"][0]
        self._log("clean", clean, 0.0)
        start = time.time() - state["seconds"][-1]
        for name in self.attacks_to_run:
            if name in state["done"]:
                continue
            if logits.shape[1] < 3 and name in ("apgd-dlr", "apgd-t", "fab-t"):
                logging.warning("AutoAttack: %s skipped (%d classes)", name, logits.shape[1])
                continue
            idx = np.flatnonzero(state["robust"])
            for s in range(0, len(idx), self.batch_size):
                b = idx[s:s + self.batch_size]
                adv, found, queries = self._component(name, model_fn, tf.gather(x_t, b),
                                                      tf.gather(y_t, b), logits[b])
                adv = np.asarray(adv, np.float32)
                pred = np.asarray(forward(model_fn, tf.constant(adv))).argmax(1)
                broken = found & (pred != y_np[b])
                state["x_adv"][b[broken]] = adv[broken]
                if self.eot_iter > 1:  # randomized model: keep the EOT candidates too
                    state["x_adv"][b[~broken]] = adv[~broken]
                state["robust"][b[broken]] = False
                if queries is not None:
                    q = state["queries"] if state["queries"] is not None else \
                        np.zeros(len(x_np), np.int64)
                    q[b] = queries
                    state["queries"] = q
            state["done"].append(name)
            state["acc"].append(float(state["robust"].mean()))
            state["seconds"].append(time.time() - start)
            self._log(name, state["acc"][-1], state["seconds"][-1])
            self._save_state(state, x_np, y_np)
        by_attack = dict(zip(state["done"], state["acc"][1:]))
        _square_check(checks, by_attack)
        report = {
            "version": self.version, "norm": "inf" if self.norm == np.inf else 2,
            "eps": float(self.eps), "num_examples": int(len(x_np)),
            "clean_accuracy": clean, "robust_accuracy": float(state["robust"].mean()),
            "robust_accuracy_by_attack": by_attack,
            "seconds_by_attack": dict(zip(state["done"], state["seconds"][1:])),
            "square_queries": None if state["queries"] is None else {
                "mean": float(np.mean(state["queries"][state["queries"] > 0]))
                if np.any(state["queries"] > 0) else 0.0,
                "median": float(np.median(state["queries"][state["queries"] > 0]))
                if np.any(state["queries"] > 0) else 0.0},
            "checks": checks,
        }
        return finish(state["x_adv"], self.clip_min, self.clip_max), report

    def _log(self, name, acc, seconds):
        if self.verbose:
            logging.info("AutoAttack %s: robust accuracy %.2f%% (%.1f s)", name, 100 * acc,
                         seconds)

    def _key(self, x, y):
        h = hashlib.sha1(np.ascontiguousarray(x).tobytes())
        h.update(np.ascontiguousarray(y).tobytes())
        h.update(repr((self.eps, self.norm, self.attacks_to_run, self.nb_iter,
                       self.n_queries, self.n_restarts, self.eot_iter, self.seed)).encode())
        return h.hexdigest()

    def _load_state(self, x, y):
        if not self.state_path or not os.path.exists(self.state_path):
            return None
        data = rundir.read_npz(self.state_path)
        if str(data["key"]) != self._key(x, y):
            logging.warning("AutoAttack state %s belongs to another run; starting afresh.",
                            self.state_path)
            return None
        logging.info("AutoAttack: resuming from %s (done: %s)", self.state_path,
                     ", ".join(map(str, data["done"])) or "nothing")
        return {"x_adv": data["x_adv"], "robust": data["robust"].astype(bool),
                "done": [str(d) for d in data["done"]], "acc": list(data["acc"]),
                "seconds": list(data["seconds"]),
                "queries": data["queries"] if data["queries"].size else None}

    def _save_state(self, state, x, y):
        if not self.state_path:
            return
        rundir.write_npz(self.state_path, key=np.array(self._key(x, y)),
                         x_adv=state["x_adv"], robust=state["robust"],
                         done=np.array(state["done"]), acc=np.array(state["acc"]),
                         seconds=np.array(state["seconds"]),
                         queries=np.zeros(0) if state["queries"] is None else state["queries"])


def _outputs_probabilities(model_fn, x):
    """Whether ``model_fn`` outputs probabilities on a few images of ``x`` (False when it
    cannot be called: :func:`prepare` then names the problem)."""
    try:
        out = np.asarray(forward(model_fn, tf.constant(np.asarray(x, np.float32)[:8])))
    except Exception:  # bad models and inputs are reported by prepare
        return False
    return bool(out.ndim == 2 and looks_like_probabilities(out))


def run_checks(model_fn: Callable, x: ArrayLike, y: ArrayLike, logits: ArrayLike, *,
               probabilities: bool = False, n_target_classes: int = 9,
               attacks_to_run: Sequence[str] = VERSIONS["standard"], sample: int = 16) -> dict:
    """The reference's checks before an evaluation (a True flag is a warning).

    Returns ``{"randomized", "probability_outputs", "zero_gradients",
    "zero_gradient_fraction", "too_few_classes", "dynamic", "messages"}``; ``square_stronger``
    is added after the run.
    """
    xs, ys = x[:sample], y[:sample]
    a, b = (np.asarray(forward(model_fn, xs)) for _ in range(2))
    randomized = not np.allclose(a, b, rtol=1e-5, atol=1e-6)
    # Input-dependent (dynamic) forward: a point's output depends on its batch-mates.
    rev = np.asarray(forward(model_fn, tf.reverse(xs, [0])))[::-1]
    single = np.asarray(forward(model_fn, xs[:1]))
    dynamic = not randomized and not (np.allclose(a, rev, rtol=1e-4, atol=1e-4)
                                      and np.allclose(a[:1], single, rtol=1e-4, atol=1e-4))
    grad = _steps.loss_gradient(model_fn, xs, ys).numpy().reshape(len(xs), -1)
    zero = float(np.mean(np.all(grad == 0, axis=1)))
    num_classes = logits.shape[1]
    dlr = any(n in attacks_to_run for n in ("apgd-dlr", "apgd-t"))
    targets = any(n in attacks_to_run for n in ("apgd-t", "fab-t"))
    few = (dlr and num_classes < 3) or (targets and n_target_classes > num_classes - 1)
    text = {
        "randomized": "the forward pass is random: use version='rand' (EOT)",
        "probability_outputs": "the model outputs probabilities (softmax head): attack its "
                               "logits; log-probabilities are used",
        "zero_gradients": f"{100 * zero:.0f}% of the checked points have an all-zero input "
                          "gradient (gradient masking?): trust Square/DLR, not CE",
        "too_few_classes": f"{num_classes} classes: DLR needs >= 3 and at most "
                           f"{num_classes - 1} targets exist",
        "dynamic": "a point's output depends on the other points of its batch (dynamic or "
                   "batch-dependent defense): adaptive attacks are needed",
    }
    flags = {"randomized": randomized, "probability_outputs": bool(probabilities),
             "zero_gradients": zero > 0, "too_few_classes": bool(few), "dynamic": dynamic}
    return {**flags, "zero_gradient_fraction": zero,
            "messages": [text[k] for k, v in flags.items() if v]}


def _square_check(checks, by_attack, tol=0.002):
    """Flags Square (run last, gradient-free) lowering accuracy below the white-box attacks."""
    names = list(by_attack)
    if "square" not in names or names.index("square") == 0:
        checks["square_stronger"] = False
        return
    before = by_attack[names[names.index("square") - 1]]
    checks["square_stronger"] = bool(by_attack["square"] < before - tol)
    if checks["square_stronger"]:
        checks["messages"].append(
            f"Square lowered robust accuracy from {100 * before:.2f}% to "
            f"{100 * by_attack['square']:.2f}% after the white-box attacks (gradient masking?)")


def autoattack(model_fn: Callable, x: ArrayLike, eps: float = 0.3, *, version: str = "standard",
               norm: float | int | str = np.inf, attacks_to_run: Sequence[str] | None = None,
               nb_iter: int = 100, n_queries: int = 5000, n_target_classes: int = 9,
               n_restarts: int | None = None, eot_iter: int | None = None, seed: int = 0,
               y: ArrayLike | None = None, targeted: bool = False, clip_min: float = 0.0,
               clip_max: float = 1.0, batch_size: int = 500, state_path: str | None = None,
               from_probabilities: bool = False, verbose: bool = True,
               return_report: bool = False) -> np.ndarray | tuple[np.ndarray, dict]:
    """AutoAttack (see :class:`AutoAttack`); untargeted only.

    Returns:
      float32 numpy array, the adversarial batch (and the report when ``return_report``).

    Raises:
      InputError: bad arguments or inputs.

    References:
      Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of
      diverse parameter-free attacks. ICML 2020.
    """
    if targeted is None or isinstance(targeted, str) or targeted:
        raise invalid("targeted", "False (AutoAttack is untargeted: APGD-T and FAB-T choose "
                      "their own targets)", targeted)
    aa = AutoAttack(model_fn, eps, norm=norm, version=version, attacks_to_run=attacks_to_run,
                    nb_iter=nb_iter, n_queries=n_queries, n_target_classes=n_target_classes,
                    n_restarts=n_restarts, eot_iter=eot_iter, seed=seed, clip_min=clip_min,
                    clip_max=clip_max, batch_size=batch_size, state_path=state_path,
                    verbose=verbose)
    x_adv, report = aa.run(x, y, from_probabilities=from_probabilities)
    return (x_adv, report) if return_report else x_adv
