r"""One report of a run directory: model card, attacks, robustness, transfer, visualizations,
defenses, configuration and versions, and what the run still lacks.

  python -m experiments.report --run_dir=runs/demo

Writes ``<output_dir>/report.html`` (self-contained: figures embedded, CSS inline, no
network) and ``report.md`` (figures linked by relative path), default ``--output_dir``
``<run_dir>/report``, plus ``config.json`` (the command and the fingerprint of the report's
inputs, so ``make demo`` rebuilds it only when they change). A run directory with only some
outputs gives a report of those and lists the missing ones with the command that makes each.
"""

import os

from absl import flags, logging

from cnnvis_tf import report, rundir
from experiments import common

FLAGS = flags.FLAGS

flags.DEFINE_string("run_dir", None, "Run directory written by experiments.train; every "
                    "attack, table and visualization below it is reported.")
flags.DEFINE_bool("layers", True, "List the model's layers (loads model.keras).")


def main(argv):
    del argv
    run_dir = os.path.expanduser(FLAGS.run_dir)
    rep = report.collect(run_dir, load_model=FLAGS.layers)
    out_dir = common.make_output_dir(FLAGS.output_dir or os.path.join(run_dir, "report"))
    common.begin(out_dir, report.REPORT_HTML)
    present = {s: len(rep[s]) for s in ("attacks", "robustness", "transfer", "certify",
                                          "visualizations", "defenses", "others")}
    rundir.write_record(out_dir, common.record(
        "experiments.report", {"run_dir": run_dir, "layers": FLAGS.layers,
                               "sections": present, "missing": [m["what"] for m in rep["missing"]]},
        {run_dir: rep["fingerprint"]}))
    html, md = report.write(rep, out_dir)  # report.html last: the completion marker
    for m in rep["missing"]:
        logging.info("not in this run: %s (%s)", m["what"], m["why"])
    print(f"Wrote {html} ({os.path.getsize(html) / 1e6:.1f} MB, self-contained) and {md}.")


def console_main():
    common.run(main, required=("run_dir",))


if __name__ == "__main__":
    console_main()
