"""The experiment scripts. Importing the package first imports TensorFlow quietly: its
start-up banner (oneDNN, CUDA driver and CPU-feature notices, printed twice by TF 2.21 before
its logging is set up) is captured and shown once, only the lines at or above
``TF_CPP_MIN_LOG_LEVEL`` (default here 2: errors only)."""

import os
import re
import sys
import tempfile

_RECORD = re.compile(r"^[IWEF]\d{4} ")
_LEVELS = "IWEF"
_PY_WARNING = re.compile(r"^\S+:\d+: \w*Warning")


def _tf_banner_lines(text, min_level):
    """The distinct log records of ``text`` at or above ``min_level`` (0 info .. 3 fatal),
    without absl's pre-initialisation notice; other lines (Python warnings) are kept."""
    records, seen = [], set()
    for line in text.splitlines():
        if line.startswith("WARNING: All log messages before absl::InitializeLog()"):
            continue
        if _RECORD.match(line):
            records.append([line])
        elif records and _RECORD.match(records[-1][0]) and not _PY_WARNING.match(line):
            records[-1].append(line)  # continuation of a multi-line record
        else:
            records.append([line])
    out = []
    for rec in records:
        level = _LEVELS.index(rec[0][0]) if _RECORD.match(rec[0]) else len(_LEVELS)
        # The same message from the two copies of TF's logging: keyed without its timestamp.
        key = "\n".join([re.sub(r"^\S+ \S+ +\d+ ", "", rec[0])] + rec[1:])
        if level >= min_level and key not in seen:
            seen.add(key)
            out += rec
    return out


def _import_tensorflow_quietly():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        min_level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        min_level = 2
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr file descriptor to redirect
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe logs here, not later
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines = _tf_banner_lines(tmp.read().decode(errors="replace"), min_level)
            if lines:
                sys.stderr.write("\n".join(lines) + "\n")
                sys.stderr.flush()


_import_tensorflow_quietly()
