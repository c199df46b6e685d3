"""Defenses: adversarial training (+ Parseval, smoothness), selective dropout, adversarial
detection and input reconstruction (seed 000 §1.3.2, seed 002, seed 004 §5.3)."""

from cnnvis_tf.defenses.adversarial_training import (
    DefenseModel,
    seed002_magnitudes,
    snr_sigma,
    truncated_normal_eps,
)
from cnnvis_tf.defenses.detection import AdversarialDetector, penultimate_layer
from cnnvis_tf.defenses.reconstruction import InputReconstruction, denoising_autoencoder
from cnnvis_tf.defenses.selective_dropout import (
    SelectiveDropout,
    num_selected,
    p_schedule,
    select_units,
)
from cnnvis_tf.defenses.wrapping import classifier_of, make_defended
from cnnvis_tf.volatility import unit_volatility

__all__ = [
    "DefenseModel",
    "truncated_normal_eps",
    "snr_sigma",
    "seed002_magnitudes",
    "AdversarialDetector",
    "penultimate_layer",
    "InputReconstruction",
    "denoising_autoencoder",
    "SelectiveDropout",
    "num_selected",
    "p_schedule",
    "select_units",
    "unit_volatility",
    "make_defended",
    "classifier_of",
]
