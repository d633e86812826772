"""What all checks share: a failed check shows in Jupyter as its message alone (QSAL_DEBUG=1: the full
traceback), and the cell still fails with the exception's name and message."""
import sys
import types

import pytest

from qsal_lab.checks import common
from qsal_lab.checks.common import CheckFailed, show_check_failure


class RecordingShell:
    """The two methods of an IPython shell that show_check_failure calls, recording what they get."""

    def __init__(self):
        self.shown, self.full = [], []

    def _showtraceback(self, etype, evalue, stb):
        self.shown.append((etype, evalue, stb))

    def showtraceback(self, exc_tuple=None, tb_offset=None):
        self.full.append(exc_tuple)


def raised_check_failure(message="accuracy() returned None: fill in its TODO so that it returns a number."):
    try:
        raise CheckFailed(message)
    except CheckFailed:
        return sys.exc_info()


def test_a_failed_check_shows_its_message_and_nothing_else(monkeypatch):
    monkeypatch.delenv("QSAL_DEBUG", raising=False)
    shell = RecordingShell()
    etype, value, tb = raised_check_failure()
    show_check_failure(shell, etype, value, tb)
    assert shell.full == []
    # ipykernel turns exactly these three into the cell's error output: ename, evalue and the lines shown
    assert shell.shown == [(CheckFailed, value, ["CheckFailed: accuracy() returned None: fill in its TODO so that "
                                                 "it returns a number."])]
    assert sys.last_value is value and sys.last_traceback is tb  # %tb and %debug still find the full story


@pytest.mark.parametrize("debug", ["1", "yes"])
def test_qsal_debug_shows_the_full_traceback(monkeypatch, debug):
    monkeypatch.setenv("QSAL_DEBUG", debug)
    shell = RecordingShell()
    etype, value, tb = raised_check_failure()
    show_check_failure(shell, etype, value, tb)
    assert shell.shown == [] and shell.full == [(etype, value, tb)]


def test_qsal_debug_0_keeps_the_short_message(monkeypatch):
    monkeypatch.setenv("QSAL_DEBUG", "0")
    shell = RecordingShell()
    show_check_failure(shell, *raised_check_failure("x"))
    assert shell.shown[0][2] == ["CheckFailed: x"] and shell.full == []


def test_the_handler_is_registered_inside_ipython_only(monkeypatch):
    registered = []
    shell = types.SimpleNamespace(set_custom_exc=lambda exc_tuple, handler: registered.append((exc_tuple, handler)))
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    common._install_ipython_handler()
    assert registered == [((CheckFailed, NameError), show_check_failure)]
    # IPython imported but no shell running (a plain script or pytest): nothing to register, no error
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    common._install_ipython_handler()
    monkeypatch.delitem(sys.modules, "IPython")
    common._install_ipython_handler()
    assert len(registered) == 1


def test_a_real_ipython_shell_shows_one_line_and_records_the_error(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.delenv("QSAL_DEBUG", raising=False)
    had_shell = InteractiveShell.initialized()
    shell = InteractiveShell.instance()
    shown = []
    monkeypatch.setattr(shell, "_showtraceback",
                        lambda etype, evalue, stb: shown.append((etype.__name__, str(evalue), stb)))
    shell.set_custom_exc((CheckFailed,), show_check_failure)
    try:
        shell.user_ns["CheckFailed"] = CheckFailed
        result = shell.run_cell("raise CheckFailed('train_step() returned None')")
    finally:
        shell.set_custom_exc((), None)
        if not had_shell:  # leave no IPython shell behind for the tests that follow
            InteractiveShell.clear_instance()
    assert isinstance(result.error_in_exec, CheckFailed)  # the cell failed, so nbclient and nbval see an error
    assert shown == [("CheckFailed", "train_step() returned None", ["CheckFailed: train_step() returned None"])]


def test_as_tensor_names_what_is_wrong_with_a_return_value():
    import torch
    from qsal_lab.checks.common import as_tensor

    x = torch.zeros(2, 3)
    assert as_tensor(x + 1, "f", x) is not None
    with pytest.raises(CheckFailed, match=r"f\(\) returned None: fill in its TODO so that it returns codes\."):
        as_tensor(None, "f", x, "codes")
    with pytest.raises(CheckFailed, match=r"f\(\) returned a value of type list; return a torch tensor \(codes\) the shape of x"):
        as_tensor([1.0], "f", x, "codes")
    with pytest.raises(CheckFailed, match=r"f\(\) returned shape \(3,\) for x of shape \(2, 3\); one per element\."):
        as_tensor(torch.zeros(3), "f", x, why_same_shape="one per element.")


def _run_in_a_real_shell(monkeypatch, *cells):
    """Run cells in an IPython shell with the checks' handler; (what _showtraceback got, what showtraceback got)."""
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.delenv("QSAL_DEBUG", raising=False)
    had_shell = InteractiveShell.initialized()
    shell = InteractiveShell.instance()
    short, full = [], []
    monkeypatch.setattr(shell, "_showtraceback", lambda etype, evalue, stb: short.append((etype.__name__, stb)))
    monkeypatch.setattr(shell, "showtraceback", lambda exc_tuple=None, *a, **k: full.append(exc_tuple[0].__name__))
    shell.set_custom_exc((CheckFailed, NameError), show_check_failure)
    try:
        results = [shell.run_cell(cell) for cell in cells]
    finally:
        shell.set_custom_exc((), None)
        if not had_shell:
            InteractiveShell.clear_instance()
    return results, short, full


def test_a_check_cell_naming_an_undefined_function_says_define_it_above(monkeypatch):
    # the learner renamed accuracy (or its cell stopped at a SyntaxError): the check cell's own line fails
    results, short, full = _run_in_a_real_shell(monkeypatch, "def check_accuracy(fn):\n    pass",
                                                "def accuracy2(logits, labels):\n    return 1.0",
                                                "check_accuracy(accuracy)")
    assert isinstance(results[-1].error_in_exec, NameError)  # the cell still fails, as nbclient and the grader see
    assert full == [] and len(short) == 1
    name, lines = short[0]
    assert name == "NameError" and len(lines) == 1
    assert lines[0].startswith("NameError: name 'accuracy' is not defined. Define `accuracy` above: run the cell")
    assert "SyntaxError" in lines[0]


def test_other_name_errors_keep_their_traceback(monkeypatch):
    # inside a function (the learner's bug, deep in their code) or outside a check cell: the full traceback
    results, short, full = _run_in_a_real_shell(monkeypatch, "def f():\n    return undefined_thing\n\nf()",
                                                "print(also_undefined)",
                                                "def check_x(fn):\n    return fn()\n\ncheck_x(lambda: nowhere)")
    assert all(isinstance(r.error_in_exec, NameError) for r in results)
    assert short == [] and full == ["NameError", "NameError", "NameError"]


def test_undefined_in_check_cell_looks_at_the_failing_line_only():
    from qsal_lab.checks.common import undefined_in_check_cell

    try:
        raise ValueError("x")
    except ValueError:
        assert undefined_in_check_cell(*sys.exc_info()) is None


# ----------------------------------------------------------------------------- the tolerance policy

def test_float32_and_float64_answers_pass_alike():
    import numpy as np
    import torch

    from qsal_lab.checks.common import close

    assert close(np.float32(0.6), 0.6) and close(torch.tensor(5, dtype=torch.int64) / 8, 0.625)
    assert close(torch.tensor(0.6, dtype=torch.float32).item(), 0.6)  # a Python float that carries float32 rounding
    assert not close(0.6001, 0.6) and not close(0.0, 1e-3)
    assert close(float("nan"), float("nan")) and not close(float("nan"), 0.0)


def test_lower_precision_dtypes_get_a_wider_tolerance():
    import torch

    from qsal_lab.checks.common import close, precision, tolerance

    assert precision(torch.zeros(1, dtype=torch.float64)) == precision(1.0) == precision(torch.zeros(1, dtype=torch.int64))
    assert precision(torch.zeros(1, dtype=torch.float16)) > precision(torch.zeros(1))
    half = torch.tensor(0.6, dtype=torch.float16)
    assert close(half, 0.6) and not close(float(half), 0.6)  # the dtype, not the value, widens the tolerance
    rtol, atol = tolerance(magnitude=0)
    assert atol == 0 and rtol < 1e-5


def test_mismatches_compare_a_tensor_at_its_own_scale():
    import torch

    from qsal_lab.checks.common import allclose, mismatches

    want = torch.tensor([100.0, 0.0, -3.0])
    assert list(mismatches(want + torch.tensor([1e-4, 1e-4, 0.0]), want)) == []  # 1e-4 next to 100 is rounding
    assert list(mismatches(want + torch.tensor([0.0, 0.1, 0.0]), want)) == [1]
    assert not allclose(want[:2], want) and allclose(want.double(), want)
