"""Visualization of CNNs: one module per method family; ``plotting`` draws the figures.

The visualizers take the model in their constructor and the target (class, layer, seed)
in ``__call__`` and return numpy arrays (the tf-keras-vis / captum convention). All derive
from ``_model.Visualizer``, which resolves any Keras classifier -- functional, Sequential,
subclassed, nested, softmax-headed -- once (``_model.ResolvedModel``) and checks images and
class lists (``cnnvis_tf.checks``).

Names are imported lazily so that ``import cnnvis_tf.vis.<module>`` stays light.
"""

import importlib

_EXPORTS = {
    "ActivationMaximization": "feature_vis",
    "Deconvnet": "guided",
    "Features": "embedding",
    "DeepDream": "inversion",
    "EvolutionaryFooling": "fooling",
    "FastStyleTransfer": "style",
    "FeatureInversion": "inversion",
    "FilterSlices": "weights",
    "Gallery": "gallery",
    "GradCAM": "cam",
    "GradCAMPlusPlus": "cam",
    "GuidedBackprop": "guided",
    "IntegratedGradients": "saliency",
    "InversionNetwork": "inversion_net",
    "L2ClassModel": "neuron",
    "NeuronGradient": "neuron",
    "MultifacetedVisualization": "multifaceted",
    "NeuralStyle": "style",
    "Occlusion": "occlusion",
    "Saliency": "saliency",
    "SaliencyGrabCut": "segmentation",
    "ScoreCAM": "cam",
    "SmoothGrad": "saliency",
    "TSNEClusters": "embedding",
    "activations": "weights",
    "density_clusters": "embedding",
    "interpolate_models": "landscape",
    "features": "embedding",
    "filters": "weights",
    "loss_1d": "landscape",
    "loss_2d": "landscape",
    "neighbors": "embedding",
    "pca": "embedding",
    "receptive_field": "patches",
    "top_patches": "patches",
    "tsne": "embedding",
    "METHODS": "methods",
    # Attribution methods and controls compared by experiments.explain_eval.
    "GradientInput": "attribution",
    "LayerCAM": "attribution",
    "OcclusionMap": "attribution",
    "RISE": "attribution",
    "VarGrad": "attribution",
    "ATTRIBUTIONS": "attribution",
    "CONTROLS": "attribution",
    "edge_map": "attribution",
    "explainer": "attribution",
    "random_map": "attribution",
    # Explanation-quality metrics.
    "CurveResult": "metrics",
    "RandomizationResult": "metrics",
    "baseline_images": "metrics",
    "complexity": "metrics",
    "deletion": "metrics",
    "insertion": "metrics",
    "mu_fidelity": "metrics",
    "random_logit": "metrics",
    "randomization_check": "metrics",
    "sparseness": "metrics",
    "spearman": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"cnnvis_tf.vis.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'cnnvis_tf.vis' has no attribute {name!r}")
