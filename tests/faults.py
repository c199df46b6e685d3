"""Fault injection: stop a process at a named write, as a kill or a full disk would.

Every artefact of cnnvis_tf is written to a temp file and renamed into place with
``os.replace``; :func:`kill_at` makes the rename onto a file whose name ends with
``name`` raise :class:`Killed` (a ``BaseException``, so no ``except Exception`` in the code
under test can swallow it), either instead of that write (``when="before"``) or right
after it (``when="after"``). ``python -m tests.faults NAME WHEN MODULE ARGS...`` runs a
script under the same fault in a fresh process.
"""

import contextlib
import os
import runpy
import sys
from unittest import mock


class Killed(BaseException):
    """The process was stopped at the named write."""


@contextlib.contextmanager
def kill_at(name, when="before", nth=1, exc=None):
    """Within the block, the ``nth`` rename onto ``*name`` raises :class:`Killed` (or
    ``exc``, e.g. ``KeyboardInterrupt`` for Ctrl-C)."""
    real = os.replace
    seen = {"n": 0}

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(name):
            seen["n"] += 1
            if seen["n"] == nth:
                if when == "after":
                    real(src, dst, *args, **kwargs)
                raise (exc or Killed)(f"killed {when} writing {dst}")
        return real(src, dst, *args, **kwargs)

    with mock.patch("os.replace", replace):
        yield


def main():
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    name, when, module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    with kill_at(name, when):
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except Killed as err:
            sys.stderr.write(f"{err}\n")
            os._exit(137)


if __name__ == "__main__":
    main()
