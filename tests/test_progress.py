"""Feedback on long work: the progress helper, the attacks' progress callbacks, the quiet
TensorFlow start-up of the scripts."""

import io
import re

import numpy as np
import pytest

from cnnvis_tf import attacks, evaluation, testing
from cnnvis_tf.errors import InputError
from cnnvis_tf.progress import Progress, check_progress, format_duration

LINE = re.compile(r"^(?:(\S+) )?(\d+)/(\d+)(?: (\w+))?  elapsed (\d+:\d\d)  ETA (\d+:\d\d|\?)")


class Clock:
    """A fake clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_format_duration():
    assert format_duration(0) == "0:00"
    assert format_duration(59.6) == "1:00"
    assert format_duration(61) == "1:01"
    assert format_duration(3600 + 62) == "1:01:02"
    assert format_duration(None) == "?" and format_duration(float("inf")) == "?"


def test_plain_lines_elapsed_eta_and_rate_limit():
    clock, out = Clock(), io.StringIO()
    bar = Progress(10, "lbfgs", unit="examples", stream=out, interval=5, clock=clock)
    clock.now += 2
    bar.update(1)  # first update: always printed
    for _ in range(3):  # 1 s apart: within the interval, not printed
        clock.now += 1
        bar.advance()
    clock.now += 2
    bar.advance()  # 5 done, 7 s elapsed, 5 s since the last line: printed
    clock.now += 1
    bar.update(10, "done")  # the last: always printed, once
    bar.update(10)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    assert text.splitlines() == [
        "lbfgs 1/10 examples  elapsed 0:02  ETA 0:18",
        "lbfgs 5/10 examples  elapsed 0:07  ETA 0:07",
        "lbfgs 10/10 examples  elapsed 0:08  ETA 0:00  done",
    ]
    assert bar.lines == 3


def test_terminal_redraws_one_line_then_ends_it():
    clock, out = Clock(), Tty()
    bar = Progress(3, "runs", stream=out, interval=0, clock=clock)
    assert bar.tty
    for k in (1, 2, 3):
        clock.now += 10
        bar.update(k)
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("ETA 0:00\n") and text.count("\n") == 1
    assert "\x1b" not in text
    # Coarse loops ask for whole lines even on a terminal.
    out = Tty()
    bar = Progress(2, stream=out, interval=0, clock=clock, inplace=False)
    bar.update(1)
    bar.update(2)
    assert "\r" not in out.getvalue() and out.getvalue().count("\n") == 2


def test_an_unfinished_terminal_line_is_ended_by_close():
    out = Tty()
    bar = Progress(4, stream=out, clock=Clock())
    bar.update(1)
    assert not out.getvalue().endswith("\n")
    bar.close()
    assert out.getvalue().endswith("\n")


def test_callback_forms_scale_into_the_parent_range():
    clock, out = Clock(), io.StringIO()
    bar = Progress(100, "cw", stream=out, interval=0, clock=clock)
    batch = bar.sub(40, 20)  # the batch of examples 40..59 reports 3 of 6 rounds
    clock.now += 1
    batch(3, 6)
    assert bar.done == pytest.approx(50)
    bar(1, 2)  # half of the total, in another unit
    assert bar.done == pytest.approx(50)
    assert [LINE.match(ln).group(2) for ln in out.getvalue().splitlines()] == ["50", "50"]
    bar.advance_note("next")
    assert out.getvalue().splitlines()[-1].endswith("  next")


def test_disabled_and_bad_arguments():
    out = io.StringIO()
    bar = Progress(2, stream=out, enabled=False)
    bar.update(2)
    assert out.getvalue() == "" and bar.done == 2
    for total in (-1, 1.5, True, "3"):
        with pytest.raises(InputError, match="argument `total`"):
            Progress(total)
    assert check_progress(None) is None and check_progress(print) is print
    with pytest.raises(InputError, match="argument `progress`"):
        check_progress("yes")


@pytest.fixture(scope="module")
def tiny():
    model = testing.tiny_cnn((8, 8, 1), 3, filters=4, fc_units=8, seed=0)
    x, y = testing.tiny_data(5, (8, 8, 1), 3)
    return model, x, y


@pytest.mark.parametrize("name,kwargs,total", [
    ("one_pixel", {"maxiter": 1, "popsize": 2}, 5),  # per example
    ("lbfgs", {"binary_search_steps": 3, "max_iterations": 2, "targeted": True}, 3),  # rounds
    ("cw_l2", {"binary_search_steps": 2, "max_iterations": 2, "batch_size": 2}, 6),  # 3 x 2
])
def test_slow_attacks_report_progress(tiny, name, kwargs, total):
    model, x, y = tiny
    calls = []
    quiet = attacks.get_attack(name)(model, x, y=y, **kwargs)
    loud = attacks.get_attack(name)(model, x, y=y, progress=lambda d, t: calls.append((d, t)),
                                    **kwargs)
    assert calls == [(k, total) for k in range(1, total + 1)]
    np.testing.assert_array_equal(quiet, loud)  # reporting changes nothing
    with pytest.raises(InputError, match="argument `progress`"):
        attacks.get_attack(name)(model, x, y=y, progress="yes", **kwargs)


def test_run_attack_prints_per_example_progress_within_batches(tiny, capsys):
    model, x, y = tiny
    evaluation.run_attack("one_pixel", model, x, y, batch_size=3, progress=True, maxiter=1,
                          popsize=2)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    counts = [int(m.group(2)) for m in map(LINE.match, err.splitlines()) if m]
    # First and last lines at least (10 s apart otherwise); the last says 5/5 once.
    assert counts[0] == 1 and counts[-1] == 5 and counts.count(5) == 1
    assert all(m.group(1) == "one_pixel" and m.group(3) == "5" and m.group(4) == "examples"
               for m in map(LINE.match, err.splitlines()) if m)


def test_tensorflow_banner_shown_once_and_filtered_by_level():
    from experiments import _tf_banner_lines

    banner = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to "
        "STDERR\n"
        "I0000 00:00:1.1   12 port.cc:153] oneDNN custom operations are on.\n"
        "I0000 00:00:1.2   12 cpu_feature_guard.cc:227] This TensorFlow binary is optimized.\n"
        "To enable the following instructions: AVX2 FMA, rebuild TensorFlow.\n"
        "/x/y.py:3: UserWarning: a Python warning\n"
        "WARNING: All log messages before absl::InitializeLog() is called are written to "
        "STDERR\n"
        "I0000 00:00:2.1   12 port.cc:153] oneDNN custom operations are on.\n"
        "E0000 00:00:3.1   12 cuda_platform.cc:52] failed call to cuInit\n"
    )
    everything = _tf_banner_lines(banner, 0)
    assert sum("oneDNN" in ln for ln in everything) == 1
    assert not any("InitializeLog" in ln for ln in everything)
    assert "To enable the following instructions: AVX2 FMA, rebuild TensorFlow." in everything
    assert _tf_banner_lines(banner, 2) == ["/x/y.py:3: UserWarning: a Python warning",
                                          "E0000 00:00:3.1   12 cuda_platform.cc:52] failed "
                                          "call to cuInit"]
    assert _tf_banner_lines(banner, 3) == ["/x/y.py:3: UserWarning: a Python warning"]
