"""cnnvis_tf: see inside, break and defend convolutional networks (TensorFlow 2 / Keras 3)."""

__version__ = "0.1.0"

from cnnvis_tf import datasets, models, rundir, training  # noqa: E402,F401
from cnnvis_tf.errors import DataFilesError, InputError  # noqa: E402,F401

__all__ = ["datasets", "models", "rundir", "training", "InputError", "DataFilesError"]
