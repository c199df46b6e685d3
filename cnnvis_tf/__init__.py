"""cnnvis_tf: see inside, break and defend convolutional networks (TensorFlow 2 / Keras 3).

Importing the package registers every custom Keras object (``cnnvis_tf.layers`` and the
``defenses`` training wrapper), so any ``model.keras`` written by cnnvis_tf loads with
``import cnnvis_tf; keras.models.load_model(path)``.
"""

__version__ = "0.1.0"

from cnnvis_tf import (  # noqa: E402,F401
    attacks,
    checks,
    datasets,
    defenses,
    evaluation,
    layers,
    models,
    recipes,
    rundir,
    training,
)
from cnnvis_tf.errors import DataFilesError, InputError  # noqa: E402,F401

__all__ = [
    "attacks",
    "checks",
    "datasets",
    "defenses",
    "evaluation",
    "layers",
    "models",
    "recipes",
    "rundir",
    "training",
    "InputError",
    "DataFilesError",
]
