r"""Visualizes a trained run: weights, activations, attributions, features, landscapes.

  python -m experiments.visualize --model_dir=runs/mnist \
      --methods=filters,activations,occlusion,saliency,gradcam --output_dir=runs/mnist/vis

Writes ``<method>.png`` and ``<method>.npz`` (and/or ``.json``) per method. Methods:
filters, activations, occlusion, saliency, smoothgrad, gradcam, gradcam_pp, scorecam,
integrated_gradients, guided_backprop, deconvnet, class_model, filter_max, inversion,
deepdream, top_patches, tsne, pca, neighbors, loss_1d, loss_2d, adversarial_diff, gallery,
filter_slices, neuron_gradient, grabcut, tsne_clusters, fooling, multifaceted, inversion_net,
style_transfer, fast_style, layercam, rise, gradient_input, vargrad, pixel_occlusion
(or all). ``experiments.explain_eval`` scores the attribution maps.
"""

import os
import time

from absl import flags, logging

from cnnvis_tf import rundir, tblog
from cnnvis_tf.errors import InputError
from cnnvis_tf.progress import Progress
from experiments import common

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dir", None, "Run directory written by experiments.train (or pass "
                    "--model_path/--model with --dataset).")
flags.DEFINE_string("methods", "filters,activations,occlusion,saliency",
                    "Comma-separated visualization methods, or 'all'.")
flags.DEFINE_integer("image_index", 0, "Index of the test image to explain.", lower_bound=0)
flags.DEFINE_string("layer", None, "Layer to visualize (default: chosen per method).")
flags.DEFINE_integer("channel", None, "Feature map of --layer for guided_backprop/deconvnet "
                     "(default: the strongest on the image).", lower_bound=0)
flags.DEFINE_string("adversarial", None, "adversarial.npz of experiments.attack "
                    "(for adversarial_diff).")
flags.DEFINE_enum("grouping", "both", ["both", "source", "target", "orig", "adv"],
                  "adversarial_diff: perturbation groups by source and target label (both), "
                  "by source (orig) or by target (adv) label (Hinthorn, Tables 1-3). "
                  "--layer chooses the deconvnet projection layer (default conv2, Hinthorn).")
flags.DEFINE_integer("num_examples", 500, "Test images used by dataset-level methods "
                     "(top_patches, tsne, pca, neighbors, loss_1d, loss_2d).", lower_bound=10)
flags.DEFINE_integer("filter_index", 0, "Filter of --layer (default: the second conv layer) "
                     "whose input slices filter_slices draws.", lower_bound=0)
flags.DEFINE_list("position", None, "row,col of the neuron in --layer's output grid for "
                  "neuron_gradient (default: where --channel is largest on the image).")
flags.DEFINE_enum("regularization", "yosinski", ["l2", "yosinski"], "class_model prior: 'l2' "
                  "is argmax S_c(x) - lambda ||x||^2 from the zero image (Simonyan et al.); "
                  "'yosinski' adds blur and clipping (Yosinski et al.).")
flags.DEFINE_string("other_model_dir", None, "A second run directory of the same model: "
                    "loss_1d then interpolates between the two trained solutions.")
flags.DEFINE_integer("num_facets", 3, "Facets (k-means clusters of the top images) for "
                     "multifaceted.", lower_bound=1)
flags.DEFINE_integer("steps", 100, "Optimization steps (class_model, filter_max, inversion).",
                     lower_bound=1)
flags.DEFINE_integer("occlusion_patch", 14, "Side in pixels of the gray square occlusion "
                     "slides over the image (Zeiler & Fergus 2014).", lower_bound=1)
flags.DEFINE_integer("occlusion_stride", 7, "Step in pixels between occlusion patch "
                     "positions (the last row/column always touches the border).",
                     lower_bound=1)
common.define_source_flags()


flags.register_validator(
    "position", lambda v: v is None or (len(v) == 2 and all(p.strip().isdigit() for p in v)),
    "--position must be two non-negative integers row,col (e.g. --position=3,4).")


def main(argv):
    del argv
    from cnnvis_tf.vis import methods

    names = methods.parse_methods(FLAGS.methods)
    if "adversarial_diff" in names and not FLAGS.adversarial:
        if FLAGS.methods.strip() != "all":
            raise InputError("adversarial_diff needs --adversarial=<experiments.attack "
                             "output_dir>/adversarial.npz.")
        logging.warning("Skipping adversarial_diff: no --adversarial file given.")
        names.remove("adversarial_diff")
    run, data = common.load_source()
    other = (rundir.load_run(os.path.expanduser(FLAGS.other_model_dir))
             if FLAGS.other_model_dir else None)
    adversarial = os.path.expanduser(FLAGS.adversarial) if FLAGS.adversarial else None
    if FLAGS.adversarial and "adversarial_diff" in names:
        rundir.read_adversarial(adversarial)  # a bad file fails before any output
    out_dir = common.make_output_dir(FLAGS.output_dir)
    common.begin(out_dir, rundir.CONFIG)
    if FLAGS.image_index >= len(data.x_test):
        raise InputError(f"--image_index={FLAGS.image_index} is out of range: the test set has "
                         f"{len(data.x_test)} images.")
    n = min(FLAGS.num_examples, len(data.x_test))
    x, y = data.x_test[:n], data.y_test[:n]
    index = FLAGS.image_index
    if index >= n:  # keep the chosen image inside the sample
        x, y = data.x_test[index - n + 1 : index + 1], data.y_test[index - n + 1 : index + 1]
        index = n - 1
    ctx = methods.Context(
        model=run.model, x=x, y=y, index=index, layer=FLAGS.layer, channel=FLAGS.channel,
        class_names=run.class_names, clip_min=run.clip_min, clip_max=run.clip_max,
        initial_weights=os.path.join(run.path, rundir.INITIAL_WEIGHTS),
        adversarial=adversarial, steps=FLAGS.steps, seed=FLAGS.seed,
        grouping=FLAGS.grouping,
        filter_index=FLAGS.filter_index, regularization=FLAGS.regularization,
        position=tuple(int(p) for p in FLAGS.position) if FLAGS.position else None,
        other_model=other.model if other else None, num_facets=FLAGS.num_facets,
        occlusion_patch=FLAGS.occlusion_patch, occlusion_stride=FLAGS.occlusion_stride,
    )
    seconds, pngs = {}, []
    bar = Progress(len(names), "visualize", unit="methods", interval=0, inplace=False)
    for k, name in enumerate(names, 1):
        start = time.time()
        paths = methods.run(name, ctx, out_dir)
        seconds[name] = time.time() - start
        pngs += [os.path.join(out_dir, p) for p in paths if p.endswith(".png")]
        bar.update(k, f"{name}: {seconds[name]:.1f}s -> {', '.join(paths)}")
    tblog.log_images(run.path, out_dir, "visualize", figures=pngs)
    params = {"methods": names, "image_index": FLAGS.image_index, "layer": FLAGS.layer,
              "channel": FLAGS.channel, "adversarial": FLAGS.adversarial,
              "grouping": FLAGS.grouping,
              "num_examples": n, "steps": FLAGS.steps, "seed": FLAGS.seed,
              "filter_index": FLAGS.filter_index, "position": FLAGS.position,
              "regularization": FLAGS.regularization, "other_model_dir": FLAGS.other_model_dir,
              "num_facets": FLAGS.num_facets, "occlusion_patch": FLAGS.occlusion_patch,
              "occlusion_stride": FLAGS.occlusion_stride, **common.source_facts(run)}
    fingerprints = {run.path: run.fingerprint}
    if other:
        fingerprints[FLAGS.other_model_dir] = other.fingerprint
    rec = common.record("experiments.visualize", params, fingerprints)
    rec["seconds"] = seconds
    rundir.write_record(out_dir, rec)  # written last: marks a finished run


def console_main():
    common.run(main, required=(common.MODEL_SOURCE_FLAGS, "output_dir"))


if __name__ == "__main__":
    console_main()
