"""Tiny models and datasets for tests and examples (fast on 2 CPU cores, no downloads)."""

import keras
import numpy as np

__all__ = ["tiny_cnn", "tiny_data", "trained_tiny_cnn"]


def tiny_cnn(input_shape=(12, 12, 1), num_classes=3, *, filters=4, fc_units=16, seed=0):
    """A small functional CNN with the zoo's layer names: conv1, pool1, conv2, fc1, logits."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer=init, name="conv1")(
        inputs
    )
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(filters, 3, padding="same", kernel_initializer=init, name="conv2")(x)
    x = keras.layers.Activation("relu", name="conv2_relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(fc_units, kernel_initializer=init, name="fc1")(x)
    x = keras.layers.Activation("relu", name="fc1_relu")(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer=init, name="logits")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


def tiny_data(n=96, input_shape=(12, 12, 1), num_classes=3, *, seed=0, noise=0.15):
    """A learnable synthetic image set in [0, 1]: each class is a bright bar at its own place.

    Returns:
      (x, y): float32 images of shape (n,) + input_shape in [0, 1] and int64 labels.
    """
    rng = np.random.default_rng(seed)
    h, w, c = input_shape
    y = np.arange(n) % num_classes
    rng.shuffle(y)
    x = rng.uniform(0.0, noise, size=(n, h, w, c)).astype("float32")
    band = max(1, h // num_classes)
    for k in range(num_classes):
        rows = slice(k * band, min(h, (k + 1) * band))
        x[y == k, rows, :, :] += 0.7
    return np.clip(x, 0.0, 1.0).astype("float32"), y.astype("int64")


def trained_tiny_cnn(input_shape=(12, 12, 1), num_classes=3, *, epochs=8, seed=0):
    """A ``tiny_cnn`` fitted on ``tiny_data`` (clearly above chance), plus that data.

    Returns:
      (model, x, y)
    """
    keras.utils.set_random_seed(seed)
    model = tiny_cnn(input_shape, num_classes, seed=seed)
    x, y = tiny_data(192, input_shape, num_classes, seed=seed)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=False)
    return model, x, y
