"""What every chapter's checks share: the failure type (shown in Jupyter as its message alone), calling
the learner's function, reading the numbers it returns, and the pass message. Each chapter's checks
live in a module of their own (`qsal_lab.checks.<chapter>`); notebooks import them from there, e.g.

    from qsal_lab.checks.pact import check_pact_forward
"""
from __future__ import annotations

import os
import sys

import torch


class CheckFailed(AssertionError):
    """A learner's answer is not right yet; the message says what to fix."""


def debugging() -> bool:
    """True when QSAL_DEBUG is set (QSAL_DEBUG=1), as for the `qsal` command: show full tracebacks."""
    return os.environ.get("QSAL_DEBUG", "") not in ("", "0")


def show_check_failure(shell, etype, value, tb, tb_offset=None):
    """IPython's handler for CheckFailed: show `CheckFailed: <message>` and nothing else.

    The frames of a failed check are qsal_lab's internals; they say nothing about the learner's code and
    push the message out of sight. The cell still ends in an error whose name and message are the
    exception's (what the notebook tests read). With QSAL_DEBUG=1 the full traceback is shown instead."""
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb  # so %tb and %debug still work
    if sys.version_info >= (3, 12):
        sys.last_exc = value
    if debugging():
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
    else:
        shell._showtraceback(etype, value, [f"{etype.__name__}: {value}"])


def _install_ipython_handler():
    """Register show_check_failure when these checks run inside IPython (Jupyter); elsewhere do nothing."""
    ipython = sys.modules.get("IPython")  # inside IPython it is imported already; never import it here
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None and hasattr(shell, "set_custom_exc"):
        shell.set_custom_exc((CheckFailed,), show_check_failure)


_install_ipython_handler()


def passed(msg: str):
    print(f"✅ {msg}")


def call(fn, name, *args, hints=()):
    """Call the learner's function, turning 'not written yet' into a clear message. `hints` is a list of
    (part of an error message, what to do): the advice for errors that a typical mistake raises."""
    try:
        return fn(*args)
    except NotImplementedError:
        raise CheckFailed(f"{name}() is not implemented yet: fill in its TODO.") from None
    except CheckFailed:
        raise
    except Exception as e:
        hint = next((". " + advice for fragment, advice in hints if fragment in str(e)), "")
        raise CheckFailed(f"{name}() raised {type(e).__name__}: {e}{hint}") from None


def as_tensor(value, name, like, what="a tensor", arg="x", why_same_shape="the output has the shape of the input."):
    """The learner's return value as a tensor shaped like `like` (the argument `arg`), or CheckFailed saying why
    not: `what` names what the function returns, `why_same_shape` says why the shapes must match."""
    if value is None:
        raise CheckFailed(f"{name}() returned None: fill in its TODO so that it returns {what}.")
    if not isinstance(value, torch.Tensor):
        raise CheckFailed(f"{name}() returned a value of type {type(value).__name__}; return a torch tensor ({what}) the shape of "
                          f"{arg}, computed with torch operations on it.")
    if value.shape != like.shape:
        raise CheckFailed(f"{name}() returned shape {tuple(value.shape)} for {arg} of shape {tuple(like.shape)}; "
                          f"{why_same_shape}")
    return value


# a per-channel min/max (x.amin(dim=...)) gives a tensor where one number per tensor is expected
PER_TENSOR_HINT = "one number per tensor: take the min/max over ALL elements, x.min(), not x.min(dim=...)"


def as_float(value, name, part=None, hint="e.g. with .item()"):
    """One number from what the learner's function returned; `part` names which part of it (e.g. "scale")."""
    of = f" as its {part}" if part else ""
    if value is None:
        raise CheckFailed(f"{name}() returned None{of}: fill in its TODO so that it returns a number.")
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise CheckFailed(f"{name}() returned {'a ' + part if part else 'a'} tensor of shape {tuple(value.shape)}; "
                              f"return one number ({hint}).")
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CheckFailed(f"{name}() returned a {type(value).__name__}{of}; return a number.") from None
