"""Model zoo: functional Keras models that output logits, with named layers.

Every builder takes ``input_shape`` and ``num_classes`` and returns a functional
``keras.Model`` whose last layer is a linear ``Dense`` named ``logits``. Optional
``mean``/``std`` add a per-channel ``Normalization`` layer named ``normalize`` as the
first layer, so the model's input space is raw pixels in ``[0, 1]`` and attacks and
visualizations work in that space. ``weight_decay`` adds an L2 penalty on every kernel.

Functional models (never ``Sequential`` or subclassed) are what tf-keras-vis needs.
"""

import keras
import numpy as np

from cnnvis_tf.errors import InputError

__all__ = [
    "MODELS",
    "build_model",
    "conv2_fc500",
    "conv3_fc2",
    "conv2_pool3_fc200",
    "resnet18",
    "count_params",
    "feature_model",
    "add_input_noise",
]


def _reg(weight_decay):
    return keras.regularizers.L2(weight_decay) if weight_decay else None


def _input(input_shape, mean, std):
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    if mean is not None:
        mean = np.asarray(mean, dtype="float32").reshape(-1)
        std = np.asarray(std if std is not None else 1.0, dtype="float32").reshape(-1)
        if np.any(std <= 0):
            raise InputError(f"Invalid value received for argument `std`. Expected > 0. Received: std={std}")
        x = keras.layers.Normalization(
            axis=-1, mean=mean.tolist(), variance=(std**2).tolist(), name="normalize"
        )(x)
    return inputs, x


def _conv(x, filters, kernel, name, weight_decay, batch_norm, padding="same"):
    x = keras.layers.Conv2D(
        filters,
        kernel,
        padding=padding,
        use_bias=not batch_norm,
        kernel_regularizer=_reg(weight_decay),
        name=name,
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def _dense(x, units, name, weight_decay, batch_norm=False):
    x = keras.layers.Dense(
        units, use_bias=not batch_norm, kernel_regularizer=_reg(weight_decay), name=name
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def _logits(x, num_classes, weight_decay):
    return keras.layers.Dense(num_classes, kernel_regularizer=_reg(weight_decay), name="logits")(x)


def conv2_fc500(
    input_shape=(28, 28, 1),
    num_classes=10,
    *,
    batch_norm=False,
    filters=32,
    fc_units=500,
    weight_decay=0.0,
    mean=None,
    std=None,
):
    """Two 3x3 convolutions with 2x2 max-pooling, one 500-unit FC layer, logits.

    conv 32 3x3 same -> maxpool 2 -> conv 32 3x3 same -> maxpool 2 -> FC 500 -> classes.
    On 28x28x1 inputs without batch norm this has exactly 799,078 parameters
    (the MNIST network of Sahoo 2019, EE6132 assignment 2, Table 1).

    Args:
      input_shape: (height, width, channels).
      num_classes: number of output logits.
      batch_norm: add BatchNormalization after each conv and the FC layer (biases dropped).
      filters: filters per conv layer.
      fc_units: width of the hidden FC layer.
      weight_decay: L2 coefficient on every kernel (0 disables).
      mean, std: per-channel input normalization folded into the model.

    Returns:
      A functional ``keras.Model`` named ``conv2_fc500`` that outputs logits.
    """
    inputs, x = _input(input_shape, mean, std)
    x = _conv(x, filters, 3, "conv1", weight_decay, batch_norm)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = _conv(x, filters, 3, "conv2", weight_decay, batch_norm)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = _dense(x, fc_units, "fc1", weight_decay, batch_norm)
    return keras.Model(inputs, _logits(x, num_classes, weight_decay), name="conv2_fc500")


def conv3_fc2(
    input_shape=(28, 28, 1),
    num_classes=10,
    *,
    batch_norm=False,
    filters=(32, 64, 128),
    fc_units=(256, 128),
    weight_decay=0.0,
    mean=None,
    std=None,
):
    """Three 3x3 conv + 2x2 max-pool stages, two hidden FC layers, logits.

    The seminar-report MNIST network (Bhagwat 2019, Fig. 5: 3 conv, 3 pool, 2 FC); the
    report gives no widths, so the filter counts double per stage and the FC layers halve.
    """
    inputs, x = _input(input_shape, mean, std)
    for i, f in enumerate(filters, start=1):
        x = _conv(x, f, 3, f"conv{i}", weight_decay, batch_norm)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for i, units in enumerate(fc_units, start=1):
        x = _dense(x, units, f"fc{i}", weight_decay, batch_norm)
    return keras.Model(inputs, _logits(x, num_classes, weight_decay), name="conv3_fc2")


def conv2_pool3_fc200(
    input_shape=(28, 28, 1),
    num_classes=10,
    *,
    batch_norm=False,
    filters=(32, 64),
    fc_units=200,
    weight_decay=0.0,
    mean=None,
    std=None,
):
    """conv 32 5x5 -> maxpool 3 -> conv 64 5x5 -> maxpool 2 -> FC 200 -> logits.

    The network of the selective-dropout thesis (seed 004 §2.2: widths 32, 64, 200; pool
    sizes 3 then 2). Kernel sizes are not given there; 5x5 'same' is used.
    """
    inputs, x = _input(input_shape, mean, std)
    x = _conv(x, filters[0], 5, "conv1", weight_decay, batch_norm)
    x = keras.layers.MaxPooling2D(3, name="pool1")(x)
    x = _conv(x, filters[1], 5, "conv2", weight_decay, batch_norm)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = _dense(x, fc_units, "fc1", weight_decay, batch_norm)
    return keras.Model(inputs, _logits(x, num_classes, weight_decay), name="conv2_pool3_fc200")


def _basic_block(x, filters, stride, name, weight_decay):
    shortcut = x
    y = keras.layers.Conv2D(
        filters, 3, strides=stride, padding="same", use_bias=False,
        kernel_regularizer=_reg(weight_decay), name=f"{name}_conv1",
    )(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.Activation("relu", name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(
        filters, 3, padding="same", use_bias=False,
        kernel_regularizer=_reg(weight_decay), name=f"{name}_conv2",
    )(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=stride, use_bias=False,
            kernel_regularizer=_reg(weight_decay), name=f"{name}_shortcut",
        )(shortcut)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_shortcut_bn")(shortcut)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)


def resnet18(
    input_shape=(32, 32, 3),
    num_classes=10,
    *,
    batch_norm=True,
    stem_pool=False,
    width=64,
    blocks=(2, 2, 2, 2),
    weight_decay=0.0,
    mean=None,
    std=None,
):
    """ResNet-18 for small images (He et al. 2016, CIFAR-style 3x3 stem).

    Stem: conv 3x3 (``width``) + BN + ReLU, then optionally a 3x3/2 max-pool
    (``stem_pool=True``, the Tiny ImageNet-200 variant of seed 002 §2.3.1); four stages of
    basic blocks with widths ``width * (1, 2, 4, 8)``, stride 2 from stage 2 on; global
    average pooling; logits. ``batch_norm`` is always on (ResNet needs it); the argument
    exists so every builder accepts the same flags.
    """
    del batch_norm
    inputs, x = _input(input_shape, mean, std)
    x = keras.layers.Conv2D(
        width, 3, padding="same", use_bias=False, kernel_regularizer=_reg(weight_decay),
        name="conv1",
    )(x)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    if stem_pool:
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    x = _stages(x, _basic_block, width, blocks, weight_decay)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    name = "resnet18_stem_pool" if stem_pool else "resnet18"
    return keras.Model(inputs, _logits(x, num_classes, weight_decay), name=name)


def _stages(x, block_fn, width, blocks, weight_decay):
    """ResNet stages: widths ``width * (1, 2, 4, 8)``, stride 2 at the first block of every
    stage after the first; blocks named ``stage<s>_block<b>``."""
    for stage, n_blocks in enumerate(blocks, start=1):
        filters = width * 2 ** (stage - 1)
        for block in range(1, n_blocks + 1):
            stride = 2 if (stage > 1 and block == 1) else 1
            x = block_fn(x, filters, stride, f"stage{stage}_block{block}", weight_decay)
    return x


def _preact_block(x, filters, stride, name, weight_decay):
    # He, Zhang, Ren, Sun. Identity Mappings in Deep Residual Networks. ECCV 2016.
    out = keras.layers.BatchNormalization(name=f"{name}_bn1")(x)
    out = keras.layers.Activation("relu", name=f"{name}_relu1")(out)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=stride, use_bias=False,
            kernel_regularizer=_reg(weight_decay), name=f"{name}_shortcut",
        )(out)
    y = keras.layers.Conv2D(
        filters, 3, strides=stride, padding="same", use_bias=False,
        kernel_regularizer=_reg(weight_decay), name=f"{name}_conv1",
    )(out)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    y = keras.layers.Activation("relu", name=f"{name}_relu2")(y)
    y = keras.layers.Conv2D(
        filters, 3, padding="same", use_bias=False,
        kernel_regularizer=_reg(weight_decay), name=f"{name}_conv2",
    )(y)
    return keras.layers.Add(name=f"{name}_out")([y, shortcut])


def preact_resnet18(
    input_shape=(32, 32, 3),
    num_classes=10,
    *,
    batch_norm=True,
    width=64,
    blocks=(2, 2, 2, 2),
    weight_decay=0.0,
    mean=None,
    std=None,
):
    """Pre-activation ResNet-18 (He et al. 2016, "Identity Mappings"), the network of seed
    002's code: BN-ReLU before each convolution, a 3x3 stem without BN, a final BN-ReLU
    before global average pooling. ``batch_norm`` is always on."""
    del batch_norm
    inputs, x = _input(input_shape, mean, std)
    x = keras.layers.Conv2D(
        width, 3, padding="same", use_bias=False, kernel_regularizer=_reg(weight_decay),
        name="conv1",
    )(x)
    x = _stages(x, _preact_block, width, blocks, weight_decay)
    x = keras.layers.BatchNormalization(name="final_bn")(x)
    x = keras.layers.Activation("relu", name="final_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, _logits(x, num_classes, weight_decay), name="preact_resnet18")


def _resnet18_stem_pool(input_shape=(64, 64, 3), num_classes=200, **kwargs):
    kwargs["stem_pool"] = True
    return resnet18(input_shape, num_classes, **kwargs)


MODELS = {
    "conv2_fc500": conv2_fc500,
    "conv3_fc2": conv3_fc2,
    "conv2_pool3_fc200": conv2_pool3_fc200,
    "resnet18": resnet18,
    "resnet18_stem_pool": _resnet18_stem_pool,
    "preact_resnet18": preact_resnet18,
}


def build_model(name, input_shape, num_classes, **kwargs):
    """Builds a registered model by name.

    Raises:
      InputError: if ``name`` is not in :data:`MODELS`.
    """
    if name not in MODELS:
        raise InputError(
            f"Unknown model {name!r}. Choose one of: {', '.join(sorted(MODELS))}."
        )
    return MODELS[name](tuple(input_shape), int(num_classes), **kwargs)


def count_params(model):
    """Number of trainable plus non-trainable weights, as ``model.count_params()``
    but without the normalization layer's mean/variance/count (they are not learned)."""
    skip = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            skip += sum(int(np.prod(w.shape)) for w in layer.weights)
    return int(model.count_params()) - skip


def feature_model(model, layer_names, *, logits=True):
    """A functional model sharing ``model``'s layers that returns the outputs of the layers
    ``layer_names`` (a list, in that order), followed by ``model``'s output when ``logits``.

    The outputs are a list, except for one layer without ``logits`` (a tensor).

    Raises:
      InputError: if a name is not a layer of ``model``.
    """
    names = [layer.name for layer in model.layers]
    missing = [n for n in layer_names if n not in names]
    if missing:
        raise InputError(f"Unknown layer(s) {missing}. Choose among: {', '.join(names)}.")
    outputs = [model.get_layer(n).output for n in layer_names]
    outputs += list(model.outputs) if logits else []
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    single = len(layer_names) == 1 and not logits
    return keras.Model(inputs, outputs[0] if single else outputs,
                       name=f"{model.name}_features")


def neuron_count(model):
    """Neurons as Sahoo 2019 (seed 001 §2.2) counts them: ``filters x kernel area`` per
    convolution, then the flattened input of the first dense layer plus every dense
    layer's units (conv2_fc500: 288 + 288 + 1568 + 500 + 10 = 2,654)."""
    total, flattened = 0, False
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            total += int(layer.filters) * int(kh) * int(kw)
        elif isinstance(layer, keras.layers.Dense):
            if not flattened:
                total += int(layer.input.shape[-1])
                flattened = True
            total += int(layer.units)
    return total


# Cohen, Rosenfeld, Kolter. Certified Adversarial Robustness via Randomized Smoothing. ICML
# 2019 (training with Gaussian data augmentation).
def add_input_noise(model, sigma, seed=None):
    """``model`` behind a ``keras.layers.GaussianNoise(sigma)`` input layer: Gaussian data
    augmentation while training, the identity at inference (same logits as ``model``).

    The classifier is nested (its layers are under the layer named after it)."""
    inputs = keras.Input(shape=model.input_shape[1:], name="image")
    noisy = keras.layers.GaussianNoise(float(sigma), seed=seed, name="input_noise")(inputs)
    return keras.Model(inputs, model(noisy), name=f"{model.name}_noise")
