"""Adversarial detection: a binary classifier on the network's penultimate features.

A reactive defense (seed 000 §1.3.2): the classifier is left as it is, and a small detector
learns to tell clean inputs (label 0) from adversarial ones (label 1) from the features the
classifier computes just before its logits.

References:
  Yuan, He, Zhu and Li. "Adversarial examples: attacks and defenses for deep learning."
  IEEE TNNLS 2019, section VI-B (adversarial detecting).
  Metzen, Genewein, Fischer and Bischoff. "On detecting adversarial perturbations."
  ICLR 2017 (detector networks on intermediate features).
"""

import keras
import numpy as np

from cnnvis_tf.checks import check_fraction, check_positive, check_positive_int, invalid
from cnnvis_tf.layers.constraints import check_seed

__all__ = ["AdversarialDetector", "penultimate_layer"]


def penultimate_layer(model):
    """Name of the layer feeding the ``logits`` layer (else the second-to-last layer)."""
    names = [layer.name for layer in model.layers]
    if "logits" in names:
        inbound = model.get_layer("logits").input
        for layer in model.layers:
            if layer.output is inbound:
                return layer.name
    return model.layers[-2].name


class AdversarialDetector:
    """Detects adversarial inputs of ``model`` from its penultimate features.

    Args:
      model: the functional classifier (not modified).
      feature_layer: layer whose output feeds the detector; ``None``: penultimate layer.
      hidden_units: width of the detector's hidden layer.
      seed: initializer seed.

    Attributes:
      detector: functional model, features -> one logit (``> 0`` means adversarial).
    """

    def __init__(self, model, feature_layer=None, hidden_units=64, seed=0):
        if not isinstance(model, keras.Model):
            raise invalid("model", "a functional keras.Model", model)
        hidden_units = check_positive_int("hidden_units", hidden_units)
        seed = check_seed(seed)
        feature_layer = feature_layer or penultimate_layer(model)
        if not isinstance(feature_layer, str) or feature_layer not in [
            layer.name for layer in model.layers
        ]:
            raise invalid("feature_layer", "None or a layer of the model", feature_layer)
        self.model, self.feature_layer = model, feature_layer
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        self.features = keras.Model(inputs, model.get_layer(feature_layer).output)
        dim = int(np.prod(self.features.output.shape[1:]))
        init = keras.initializers.GlorotUniform(seed=seed)
        f_in = keras.Input(shape=(dim,), name="features")
        self.normalize = keras.layers.Normalization(name="feature_norm")
        h = self.normalize(f_in)
        h = keras.layers.Dense(hidden_units, "relu", kernel_initializer=init, name="det_fc")(h)
        out = keras.layers.Dense(1, kernel_initializer=init, name="det_logit")(h)
        self.detector = keras.Model(f_in, out, name="adversarial_detector")

    def _feats(self, x, batch_size=256):
        f = self.features.predict(x, batch_size=batch_size, verbose=0)
        return f.reshape(len(f), -1)

    def fit(self, x_clean, x_adv, epochs=20, batch_size=64, learning_rate=1e-3, seed=0):
        """Trains on clean (0) vs adversarial (1) inputs; returns the Keras history dict."""
        epochs = check_positive_int("epochs", epochs)
        batch_size = check_positive_int("batch_size", batch_size)
        learning_rate = check_positive("learning_rate", learning_rate)
        seed = check_seed(seed)
        f = np.concatenate([self._feats(x_clean), self._feats(x_adv)])
        t = np.r_[np.zeros(len(x_clean)), np.ones(len(x_adv))].astype("float32")
        order = np.random.default_rng(seed).permutation(len(t))
        self.normalize.adapt(f)
        self.detector.compile(
            keras.optimizers.Adam(learning_rate),
            keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[keras.metrics.BinaryAccuracy(threshold=0.0)],
        )
        hist = self.detector.fit(
            f[order], t[order], epochs=epochs, batch_size=batch_size, verbose=0
        )
        return hist.history

    def predict_proba(self, x):
        """Probability that each input is adversarial."""
        logits = self.detector.predict(self._feats(x), verbose=0)[:, 0]
        return 1.0 / (1.0 + np.exp(-logits))

    def evaluate(self, x_clean, x_adv, threshold=0.5):
        """``detection_rate`` (adversarial flagged), ``false_positive_rate`` (clean
        flagged) and balanced ``accuracy`` at ``threshold``."""
        threshold = check_fraction("threshold", threshold)
        tpr = float(np.mean(self.predict_proba(x_adv) > threshold))
        fpr = float(np.mean(self.predict_proba(x_clean) > threshold))
        return {
            "detection_rate": tpr,
            "false_positive_rate": fpr,
            "accuracy": 0.5 * (tpr + 1.0 - fpr),
            "num_clean": int(len(x_clean)),
            "num_adversarial": int(len(x_adv)),
        }

    def detection_model(self):
        """One functional model: inputs -> detector logit (saveable as ``.keras``)."""
        inputs = self.features.inputs[0]
        flat = keras.layers.Flatten(name="det_flatten")(self.features.output)
        return keras.Model(inputs, self.detector(flat), name="detector_pipeline")
