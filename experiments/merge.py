r"""Joins the shards of a sharded batch job into the files of the unsharded run.

  for i in 0 1 2 3; do
    python -m experiments.attack --model_dir=runs/mnist --attack=pgd --eps=0.1 \
        --num_examples=10000 --num_shards=4 --shard_index=$i --output_dir=out/pgd
  done
  python -m experiments.merge --output_dir=out/pgd

Reads ``<output_dir>/shards/shard-<i>-of-<K>/`` (written by ``experiments.attack``,
``robustness``, ``certify`` or ``explain_eval`` with ``--num_shards=K``), checks that every
shard is finished and that all ran the same command apart from ``--shard_index``, and
calls the script's ``merge_shards``: the same ``metrics.json``/``results.json``, arrays,
tables and figures as one unsharded run (``seconds`` is the sum over the shards).
"""

import importlib
import os
import re
import shlex

from absl import flags, logging

from cnnvis_tf import rundir
from cnnvis_tf.errors import InputError
from experiments import common

FLAGS = flags.FLAGS

_DIR = re.compile(r"^shard-(\d+)-of-(\d+)$")
# Flags that decide which examples a shard covers and its seeds (besides the parameters).
_SAME = ("num_shards", "batch_size", "num_examples", "seed")


def _command(script, argv, index):
    """The command line of shard ``index``: ``argv`` with ``--shard_index`` replaced."""
    args = [a for a in argv if not re.match(r"^--shard_index(=|$)", a)]
    return shlex.join(["python", "-m", script, *args, f"--shard_index={index}"])


def find_shards(out_dir):
    """``[(folder, config, summary), ...]`` of every shard of ``out_dir``, in order.

    Raises:
      InputError: no shards, shards of several counts, a missing or unfinished shard (its
        command line is in the message), or shards of different commands or models.
    """
    root = os.path.join(out_dir, common.SHARDS)
    found = {}
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        m = _DIR.match(name)
        if m:
            found.setdefault(int(m.group(2)), {})[int(m.group(1))] = os.path.join(root, name)
    if not found:
        raise InputError(f"No shards in {root}: run the script with --num_shards=K "
                         f"--shard_index=i --output_dir={out_dir} for i = 0..K-1 first.")
    if len(found) > 1:
        raise InputError(f"{root} holds shards of several counts (K = "
                         f"{', '.join(map(str, sorted(found)))}); delete the folders of the "
                         "count you do not want.")
    (count, folders), = found.items()
    configs = {}
    for i, folder in folders.items():
        try:
            configs[i] = rundir.read_json(os.path.join(folder, rundir.CONFIG))
        except InputError:
            continue
    if not configs:
        raise InputError(f"No shard of {root} has started (no config.json): run the script "
                         f"with --num_shards={count} for every --shard_index.")
    ref = configs[min(configs)]
    script, argv = ref.get("script"), ref.get("argv") or []
    shards = []
    for i in range(count):
        folder = folders.get(i) or os.path.join(root, f"shard-{i}-of-{count}")
        marker = os.path.join(folder, common.SHARD_MARKER)
        if not os.path.exists(marker):
            state = "is unfinished (interrupted or running)" if i in folders else "is missing"
            raise InputError(f"Shard {i} of {count} ({folder}) {state}; run it (it resumes "
                             f"or recomputes), then merge again:\n  {_command(script, argv, i)}")
        cfg = configs.get(i)
        if cfg is None or _key(cfg) != _key(ref):
            raise InputError(f"Shard {i} of {count} ({folder}) was made by another command or "
                             f"model than shard {min(configs)}; rerun it with the same "
                             f"command:\n  {_command(script, argv, i)}")
        shards.append((folder, cfg, rundir.read_json(marker, what="shard summary")))
    return shards


def _key(cfg):
    """What must agree between shards: script, effective parameters, models and the
    flags that place the shard boundaries and seeds (devices, strategy may differ)."""
    flags_ = {k: v for k, v in (cfg.get("flags") or {}).items() if k in _SAME}
    return (cfg.get("script"), cfg.get("params"), cfg.get("models"), flags_)


def main(argv):
    del argv
    out_dir = os.path.expanduser(FLAGS.output_dir)
    shards = find_shards(out_dir)
    script = shards[0][1]["script"]
    module = importlib.import_module(script)
    if not hasattr(module, "merge_shards"):
        raise InputError(f"{script} has no merge_shards: its shards cannot be merged.")
    logging.info("Merging %d shards of %s into %s", len(shards), script, out_dir)
    module.merge_shards(out_dir, shards)


def console_main():
    common.run(main, required=("output_dir",))


if __name__ == "__main__":
    console_main()
