"""One entry point for training scripts: turn defense settings into the model to ``fit``.

``make_defended(build_model(...), adv_training=..., ...)`` returns the classifier itself
when no defense is asked for, else a :class:`DefenseModel` around it (after inserting the
interpretable filter mask when ``filter_loss_weight > 0``). ``classifier_of(model)`` gives
back the plain functional classifier to save as ``model.keras``.
"""

from cnnvis_tf.checks import check_nonneg, invalid
from cnnvis_tf.defenses.adversarial_training import (
    ADV_METHODS,
    DefenseModel,
    default_adv_loss_weight,
)
from cnnvis_tf.layers.interpretable import insert_filter_mask

__all__ = ["make_defended", "classifier_of"]


def make_defended(
    classifier,
    *,
    adv_training=None,
    adv_ratio=0.5,
    adv_eps=None,
    adv_snr_db=None,
    adv_loss_weight=None,
    pgd_steps=7,
    parseval_beta=0.0,
    smooth_gamma=0.0,
    smooth_power=1,
    smooth_layers=None,
    filter_loss_weight=0.0,
    filter_layer=None,
    clip_min=0.0,
    clip_max=1.0,
    seed=None,
    smooth_weighting="seed002",
    filter_mask_at_inference=True,
    adv_recipe="standard",
    adv_sigma=None,
):
    """Applies the requested defenses to a freshly built functional classifier.

    Args:
      classifier: functional model (inputs in ``[clip_min, clip_max]``, logits out).
      adv_training: ``None``/``"none"``/``""``, ``"fgsm"`` or ``"pgd"``.
      smooth_weighting: ``"seed002"`` (``gamma ** m``, default) or ``"gamma"``.
      filter_mask_at_inference: keep the filter mask on at inference (Zhang et al.; default),
        so ``model.keras`` scores as the model was trained.
      filter_loss_weight: if > 0, an :class:`InterpretableFilterMask` with this filter-loss
        weight is inserted after ``filter_layer`` (default: the last conv's ReLU).
      smooth_layers: list or comma-separated string of layer names (``None``: default).
      adv_recipe, adv_sigma: ``"standard"`` or seed 002's recipe (``"seed002"``, per-pixel
        magnitudes of std ``adv_sigma``); see :class:`DefenseModel`.
      Other arguments: see :class:`DefenseModel`.

    Returns:
      ``classifier`` (possibly with the filter mask) if neither adversarial training,
      Parseval nor smoothness is asked for, else a :class:`DefenseModel` wrapping it.

    Raises:
      InputError: any invalid setting, also of a defense that is off (``parseval_beta=-0.1``
        is an error, not "no Parseval").
    """
    filter_loss_weight = check_nonneg("filter_loss_weight", filter_loss_weight)
    if filter_layer is not None and not isinstance(filter_layer, str):
        raise invalid("filter_layer", "None or a layer name", filter_layer)
    if adv_training in ("", "none", "None"):
        adv_training = None
    if adv_training not in (None,) + ADV_METHODS:
        raise invalid("adv_training", "None, 'fgsm' or 'pgd'", adv_training)
    if isinstance(smooth_layers, str):
        smooth_layers = [s.strip() for s in smooth_layers.split(",") if s.strip()] or None
    # Every setting is checked (by DefenseModel's own checks), even when its defense is off.
    if adv_loss_weight is None:
        adv_loss_weight = default_adv_loss_weight(adv_recipe)
    DefenseModel._check_recipe(adv_recipe, adv_training, adv_sigma, adv_eps, adv_ratio)
    DefenseModel._check_settings(
        adv_ratio=adv_ratio, adv_eps=adv_eps, adv_snr_db=adv_snr_db,
        adv_loss_weight=adv_loss_weight, pgd_steps=pgd_steps, parseval_beta=parseval_beta,
        smooth_gamma=smooth_gamma, smooth_power=smooth_power, smooth_layers=smooth_layers,
        clip_min=clip_min, clip_max=clip_max, seed=seed,
    )
    if filter_loss_weight > 0:  # Zhang et al. keep the mask at inference: the saved model
        classifier = insert_filter_mask(  # then behaves as trained
            classifier, filter_layer, loss_weight=filter_loss_weight,
            mask_at_inference=bool(filter_mask_at_inference))
    if adv_training is None and parseval_beta <= 0 and smooth_gamma <= 0:
        return classifier
    return DefenseModel(
        classifier,
        adv_training=adv_training,
        adv_ratio=adv_ratio,
        adv_eps=adv_eps if adv_training else None,
        adv_snr_db=adv_snr_db if adv_training else None,
        adv_loss_weight=adv_loss_weight,
        pgd_steps=pgd_steps,
        parseval_beta=parseval_beta,
        smooth_gamma=smooth_gamma,
        smooth_power=smooth_power,
        smooth_layers=smooth_layers,
        clip_min=clip_min,
        clip_max=clip_max,
        seed=seed,
        smooth_weighting=smooth_weighting,
        adv_recipe=adv_recipe,
        adv_sigma=adv_sigma if adv_training else None,
    )


def classifier_of(model):
    """The plain functional classifier inside ``model`` (``model`` itself if not wrapped)."""
    return model.classifier if isinstance(model, DefenseModel) else model
