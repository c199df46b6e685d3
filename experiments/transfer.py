r"""Transferability: accuracy of every model on adversarial examples crafted on every model.

  python -m experiments.transfer --model_dirs=runs/a,runs/b,runs/c --attack=fgsm \
      --eps=0.1 --output_dir=runs/transfer

Rows are source (attacked) models, columns target (evaluated) models, cells accuracies in
percent; the diagonal is white-box accuracy. Writes ``matrix.md``, ``matrix.csv``,
``results.json`` and ``figures/transfer_matrix.png``.
"""

import os

import numpy as np
from absl import flags, logging

from cnnvis_tf import attacks, evaluation, rundir
from cnnvis_tf.errors import InputError
from cnnvis_tf.vis import plotting as plots
from experiments import common

FLAGS = flags.FLAGS

flags.DEFINE_string("model_dirs", None, "Comma-separated run directories or model files "
                    "(.keras, .h5, SavedModel; then --dataset), at least two.")
flags.DEFINE_string("names", None, "Comma-separated model names (default: directory names).")
flags.DEFINE_string("data_dir", None, "Dataset folder (default: the first run's).")
flags.DEFINE_enum("attack", "fgsm", sorted(attacks.ATTACKS), "Attack run on each source.")
flags.DEFINE_float("eps", None, "Budget of eps attacks.", lower_bound=0)
flags.DEFINE_float("snr_db", None, "Budget of snr_fgsm in dB.")
flags.DEFINE_string("params", "", "Extra attack arguments 'key=value,...'.")
flags.DEFINE_integer("num_examples", 500, "First N test images.", lower_bound=1)
flags.DEFINE_integer("batch_size", 256, "Examples per attack call.", lower_bound=1)
common.define_source_flags()


def main(argv):
    del argv
    dirs = [d.strip() for d in (FLAGS.model_dirs or "").split(",") if d.strip()]
    dirs += [spec for spec in (FLAGS.model_path, FLAGS.model) if spec]
    if len(dirs) < 2:
        raise InputError("--model_dirs needs at least two run directories, comma-separated.")
    names = FLAGS.names.split(",") if FLAGS.names else [
        os.path.basename(os.path.normpath(d)) for d in dirs]
    if len(names) != len(dirs) or len(set(names)) != len(names):
        raise InputError("--names needs one distinct name per --model_dirs entry.")
    kwargs = attacks.attack_kwargs(FLAGS.attack, eps=FLAGS.eps, snr=FLAGS.snr_db,
                                   params=FLAGS.params)
    if FLAGS.attack in attacks.TARGETED_ONLY:
        raise InputError(f"--attack={FLAGS.attack} is targeted; transfer uses untargeted "
                         "attacks.")
    loaded = [common.load_source(d, data_dir=FLAGS.data_dir) for d in dirs]
    runs = [r for r, _ in loaded]
    facts = {(r.dataset_name, tuple(r.config["input_shape"]), r.clip_min, r.clip_max)
             for r in runs}
    if len(facts) != 1:
        raise InputError(f"The runs differ in dataset, input shape or clip range ({facts}); "
                         "transfer needs models of the same task.")
    data = loaded[0][1]
    out_dir = common.make_output_dir(FLAGS.output_dir)
    common.begin(out_dir, "results.json")
    n = min(FLAGS.num_examples, len(data.x_test))
    x, y = data.x_test[:n], data.y_test[:n].astype(np.int64)
    models = dict(zip(names, (r.model for r in runs), strict=True))
    params = common.effective_attack_params(FLAGS.attack, kwargs, seed=FLAGS.seed)
    call = common.attack_call_kwargs(FLAGS.attack, params)
    clean = {k: float(np.mean(evaluation.predict_labels(m, x) == y)) for k, m in models.items()}
    _, matrix = evaluation.transfer_matrix(
        models, x, y, FLAGS.attack, batch_size=FLAGS.batch_size, clip_min=runs[0].clip_min,
        clip_max=runs[0].clip_max, **call)
    rows = {src: {dst: 100.0 * matrix[i, j] for j, dst in enumerate(names)}
            for i, src in enumerate(names)}
    rundir.write_table(
        out_dir, row_label="source \\ target", columns=names, rows=rows, stem="matrix",
        title=f"Accuracy (%) of target models on {FLAGS.attack} examples crafted on source "
              f"models ({n} images; {params}).", unit="%",
        notes=["", "Clean accuracy (%): "
               + ", ".join(f"{k} {100 * v:.2f}" for k, v in clean.items())])
    fingerprints = {d: r.fingerprint for d, r in zip(dirs, runs)}
    rec_params = {"attack": FLAGS.attack, "attack_kwargs": params, "num_examples": n,
                  "names": names, "model_dirs": dirs}
    rundir.write_record(out_dir, common.record("experiments.transfer", rec_params,
                                               fingerprints))
    fig_dir = os.path.join(out_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    plots.plot_matrix(os.path.join(fig_dir, "transfer_matrix.png"), names, matrix)
    rundir.write_json(os.path.join(out_dir, "results.json"), {  # completion marker
        **rec_params, "matrix": matrix, "clean_accuracy": clean, "model_fingerprints":
        fingerprints, "flags": common.script_flags()})
    with open(os.path.join(out_dir, "matrix.md")) as f:
        logging.info("\n%s", f.read())


def console_main():
    common.run(main, required=(("model_dirs", "model_path", "model"), "output_dir"))


if __name__ == "__main__":
    console_main()
