"""Evolved fooling images: unrecognizable images classified with high confidence.

Direct encoding (one gene per pixel value) evolved with MAP-Elites where each class is a
niche: an archive keeps the image with the highest softmax probability per class; every
generation mutates randomly chosen elites and each offspring replaces the elite of every
class it now beats. Only the model's outputs are used (no gradients).

References:
  Nguyen, A., Yosinski, J. and Clune, J. Deep Neural Networks are Easily Fooled: High
  Confidence Predictions for Unrecognizable Images. CVPR 2015 (direct encoding, MAP-Elites).
  Mouret, J.-B. and Clune, J. Illuminating search spaces by mapping elites.
  arXiv:1504.04909, 2015.
"""

from collections.abc import Sequence

import numpy as np

from cnnvis_tf.checks import check_fraction, check_labels, check_positive, check_positive_int
from cnnvis_tf.vis import _model


class EvolutionaryFooling(_model.Visualizer):
    """MAP-Elites over directly encoded images, one niche per class.

    Args:
      model: any Keras classifier (queried for its outputs only).
      clip_min, clip_max: the model's input range (the genes' range).
    """

    def _probs(self, x):
        return _model.softmax(self.resolved.logits(x).astype("float64"))

    def __call__(self, classes: Sequence[int] | None = None, generations: int = 200,
                 offspring: int = 64, mutation_rate: float = 0.1, mutation_std: float = 0.3,
                 target: float = 0.995, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Evolves one fooling image per class.

        Args:
          classes: target classes (``None``: all).
          generations: at most this many generations (stops early once every target class
            has an elite with probability >= ``target``).
          offspring: images evaluated per generation.
          mutation_rate: probability that a gene (pixel value) mutates.
          mutation_std: std of a Gaussian mutation, as a fraction of the input range.
          target: stopping confidence.
          seed: seed of the initial population and the mutations.

        Returns:
          (images, history): float32 (len(classes), H, W, C) elites and float32
          (generations run + 1, len(classes)) elite probability per generation.
        """
        n = self.resolved.num_classes
        classes = np.arange(n) if classes is None else np.atleast_1d(np.asarray(classes))
        classes = check_labels(classes, len(classes), n, name="classes")
        generations = check_positive_int("generations", generations)
        offspring = check_positive_int("offspring", offspring)
        rate = check_fraction("mutation_rate", mutation_rate, low_open=True)
        std = check_positive("mutation_std", mutation_std) * (self.clip_max - self.clip_min)
        target = check_fraction("target", target)
        rng = np.random.default_rng(seed)
        shape = tuple(self.resolved.input_shape)
        pop = rng.uniform(self.clip_min, self.clip_max, (offspring,) + shape).astype("float32")
        p = self._probs(pop)[:, classes]
        best = p.argmax(axis=0)
        elites, fitness = pop[best].copy(), p[best, np.arange(len(classes))]
        history = [fitness.copy()]
        for _ in range(generations):
            if (fitness >= target).all():
                break
            open_niches = np.flatnonzero(fitness < target)  # no effort on finished ones
            parents = elites[rng.choice(open_niches, offspring)]
            genes = rng.random(parents.shape) < rate
            kids = parents + genes * rng.normal(0.0, std, parents.shape)
            kids = np.clip(kids, self.clip_min, self.clip_max).astype("float32")
            p = self._probs(kids)[:, classes]
            best = p.argmax(axis=0)
            better = p[best, np.arange(len(classes))] > fitness
            elites[better] = kids[best[better]]
            fitness[better] = p[best[better], np.flatnonzero(better)]
            history.append(fitness.copy())
        return elites, np.asarray(history, dtype="float32")
