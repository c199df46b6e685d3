"""Custom Keras objects of cnnvis_tf, all registered serializable (package="cnnvis_tf").

Importing this package registers every custom layer; ``import cnnvis_tf`` registers these
and the defenses' training wrapper, so ``keras.models.load_model`` reads any file written
by cnnvis_tf.
"""

from cnnvis_tf.layers.constraints import (
    ConvexConstraint,
    ParsevalConstraint,
    apply_parseval,
    parseval_deviation,
)
from cnnvis_tf.layers.interpretable import (
    InterpretableFilterMask,
    filter_loss,
    insert_filter_mask,
    part_templates,
    template_mask,
)
from cnnvis_tf.layers.smoothness import (
    cosine_adjacency,
    default_smooth_layers,
    feature_model,
    label_smoothness,
    laplacian_smoothness_penalty,
)

__all__ = [
    "ConvexConstraint",
    "ParsevalConstraint",
    "apply_parseval",
    "parseval_deviation",
    "InterpretableFilterMask",
    "filter_loss",
    "insert_filter_mask",
    "part_templates",
    "template_mask",
    "cosine_adjacency",
    "default_smooth_layers",
    "feature_model",
    "label_smoothness",
    "laplacian_smoothness_penalty",
]
