"""Class activation maps through tf-keras-vis: Grad-CAM, Grad-CAM++ and Score-CAM.

References:
  Selvaraju, R. R. et al. Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization. ICCV 2017.
  Chattopadhyay, A. et al. Grad-CAM++: Improved Visual Explanations for Deep Convolutional
  Networks. WACV 2018.
  Wang, H. et al. Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
  Networks. CVPR workshops 2020.
"""

import contextlib
import io
import warnings

import keras
import numpy as np
from tf_keras_vis.gradcam import Gradcam
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
from tf_keras_vis.scorecam import Scorecam
from tf_keras_vis.utils.scores import CategoricalScore

from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import _model


class _Cam:
    _tkv = None
    _softmax_output = False

    def __init__(self, model, layer=None):
        self.model = _model.logits_model(model)
        convs = _model.conv_layers(self.model)
        self.layer = layer or _model.last_spatial_layer(self.model)
        if len(_model.get_layer(self.model, self.layer).output.shape) != 4:
            raise InputError(
                f"Layer {self.layer!r} has no spatial output; CAMs need a conv layer such as "
                f"one of: {', '.join(convs)}."
            )
        vis_model = self.model
        if self._softmax_output:
            probs = keras.layers.Softmax(name="cam_softmax")(self.model.outputs[0])
            vis_model = keras.Model(self.model.inputs[0], probs)
        self._vis = self._tkv(vis_model, clone=False)

    def __call__(self, x, classes=None, normalize=True):
        """Class activation maps.

        Args:
          x: images (N, H, W, C) or one image in the model's input space.
          classes: class per image; ``None`` uses the model's prediction.
          normalize: scale each map to [0, 1].

        Returns:
          float32 (N, H, W) maps upsampled to the input size.
        """
        x = _model.as_batch(x, self.model)
        classes = _model.resolve_classes(self.model, x, classes)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            cam = self._vis(
                CategoricalScore(classes.tolist()),
                x,
                penultimate_layer=self.layer,
                seek_penultimate_conv_layer=False,
                normalize_cam=normalize,
                **self._extra(),
            )
        return np.asarray(cam, dtype="float32")

    def _extra(self):
        return {}


class GradCAM(_Cam):
    """Grad-CAM: ReLU of the feature maps weighted by their average class gradient.

    Args:
      model: any Keras model.
      layer: conv layer to read; ``None`` is the last spatial layer (rectified, pooled maps
        of the last conv; the pre-ReLU conv output often gives an all-zero CAM).
    """

    _tkv = Gradcam


class GradCAMPlusPlus(_Cam):
    """Grad-CAM++: higher-order weighting of positive gradients (same args as GradCAM)."""

    _tkv = GradcamPlusPlus


class ScoreCAM(_Cam):
    """Score-CAM: feature maps weighted by the softmax score of the image masked by each map.

    Args:
      model: any Keras model (its logits are passed through a softmax, as in the paper).
      layer: conv layer to read; ``None`` is the last spatial layer (rectified, pooled maps
        of the last conv; the pre-ReLU conv output often gives an all-zero CAM).
      batch_size: masked images per forward pass.
    """

    _tkv = Scorecam
    _softmax_output = True

    def __init__(self, model, layer=None, batch_size=64):
        super().__init__(model, layer)
        self.batch_size = int(batch_size)

    def _extra(self):
        return {"batch_size": self.batch_size}
