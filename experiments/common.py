"""Flags and set-up shared by the experiment scripts.

Every script: ``common.run(main)`` instead of ``app.run(main)`` so that a bad flag or input
(:class:`cnnvis_tf.errors.InputError`) exits non-zero with one clear line.
"""

import os
import sys

from absl import app, flags

from cnnvis_tf.errors import InputError

FLAGS = flags.FLAGS

flags.DEFINE_string("output_dir", None, "Directory every output is written to.")
flags.DEFINE_integer("seed", 0, "Seed of weights, data order and splits.")
flags.DEFINE_integer(
    "num_cpu_devices", 0,
    "If > 1, split the CPU into this many logical devices (to test --strategy=mirrored "
    "without accelerators).",
)


def configure_devices(num_cpu_devices):
    """Splits the host CPU into ``num_cpu_devices`` logical devices (before TF starts)."""
    if num_cpu_devices and num_cpu_devices > 1:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * int(num_cpu_devices)
        )


def script_flags():
    """The values of the flags defined by experiments modules (not absl's own)."""
    out = {}
    for module, module_flags in FLAGS.flags_by_module_dict().items():
        if module.startswith("experiments") or module == "__main__" or "experiments/" in module:
            for f in module_flags:
                out[f.name] = f.value
    return out


def make_output_dir(path):
    if not path:
        raise InputError("--output_dir is required: pass --output_dir=<directory for outputs>.")
    os.makedirs(path, exist_ok=True)
    return path


def run(main):
    """``app.run`` with one-line errors for bad input."""

    def wrapped(argv):
        try:
            return main(argv)
        except InputError as err:
            sys.stderr.write(f"error: {err}\n")
            sys.stderr.flush()
            sys.exit(2)

    app.run(wrapped)
