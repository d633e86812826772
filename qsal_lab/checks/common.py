"""What every chapter's checks share: the failure type (shown in Jupyter as its message alone), calling
the learner's function, reading the numbers it returns, comparing them (one tolerance policy), and the
pass message. Each chapter's checks live in a module of their own (`qsal_lab.checks.<chapter>`);
notebooks import them from there, e.g.

    from qsal_lab.checks.pact import check_pact_forward
"""
from __future__ import annotations

import contextlib
import io
import linecache
import os
import sys

import numpy as np
import torch


class CheckFailed(AssertionError):
    """A learner's answer is not right yet; the message says what to fix."""


def debugging() -> bool:
    """True when QSAL_DEBUG is set (QSAL_DEBUG=1), as for the `qsal` command: show full tracebacks."""
    return os.environ.get("QSAL_DEBUG", "") not in ("", "0")


def undefined_in_check_cell(etype, value, tb) -> str | None:
    """The name a check cell used but nobody defined (a NameError raised by the cell's own top-level line
    that calls a check_ function), or None for any other error.

    A renamed function, or a cell that never ran because of a SyntaxError, leaves the name undefined, and
    the check cell then fails before any check runs. A NameError inside a function (the learner's, or
    qsal_lab's) is a bug to read a traceback for, so it is left alone."""
    if not (isinstance(etype, type) and issubclass(etype, NameError)) or tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    if frame.f_code.co_name != "<module>" or frame.f_globals.get("__name__") != "__main__":
        return None
    line = linecache.getline(frame.f_code.co_filename, tb.tb_lineno)
    name = getattr(value, "name", None)
    if not name or "check_" not in line:
        return None
    return name


def show_check_failure(shell, etype, value, tb, tb_offset=None):
    """IPython's handler for CheckFailed (and a check cell's NameError): show one line and nothing else.

    The frames of a failed check are qsal_lab's internals; they say nothing about the learner's code and
    push the message out of sight. A check cell that names a function nobody defined gets "define `name`
    above" instead of a traceback. The cell still ends in an error whose name and message are the
    exception's (what the notebook tests read). With QSAL_DEBUG=1 the full traceback is shown instead."""
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb  # so %tb and %debug still work
    if sys.version_info >= (3, 12):
        sys.last_exc = value
    undefined = undefined_in_check_cell(etype, value, tb)
    if debugging() or (not issubclass(etype, CheckFailed) and undefined is None):
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
    elif undefined is not None:
        shell._showtraceback(etype, value, [f"{etype.__name__}: {value}. Define `{undefined}` above: run the cell "
                                            f"that defines it (if that cell shows a SyntaxError, or you renamed the "
                                            f"function, fix that first), then run this check again."])
    else:
        shell._showtraceback(etype, value, [f"{etype.__name__}: {value}"])


def _install_ipython_handler():
    """Register show_check_failure when these checks run inside IPython (Jupyter); elsewhere do nothing."""
    ipython = sys.modules.get("IPython")  # inside IPython it is imported already; never import it here
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None and hasattr(shell, "set_custom_exc"):
        shell.set_custom_exc((CheckFailed, NameError), show_check_failure)


_install_ipython_handler()


def passed(msg: str):
    print(f"✅ {msg}")


@contextlib.contextmanager
def quietly():
    """Run a check without its printout: a check on real data first re-runs the hand-made cases of the
    check before it, so that a function that failed there never gets a ✅ here."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


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


# ----------------------------------------------------------------------------- one tolerance policy
#
# Every numeric comparison in the checks goes through `close` / `mismatches` / `allclose`: the learner's number
# is right when |got - want| <= atol + rtol * |want|, with
#
#     rtol = RTOL_ULPS * eps * scale,   atol = rtol * magnitude,
#
# eps the machine epsilon of the least precise floating type involved, never finer than float32's: torch computes
# in float32 by default, and a Python float made from a float32 tensor (`.item()`, `float(...)`) carries float32's
# rounding although its type says float64. So float32 and float64 answers pass alike, a float16 or bfloat16 one
# gets its own, wider tolerance, and int tensors (exact) compare at the float32 floor. `scale` widens a comparison
# whose reference sums many terms (rounding errors add up); `magnitude` is the size of the quantity compared (1 for
# fractions; for a tensor, its largest |value|), so that a value near 0 is judged against the quantity's scale;
# magnitude=0 compares purely relatively (quantities that are all small, e.g. relative errors of 1e-4).
# `slack` is not precision: it is a relative allowance where the right answer itself may vary (two definitions of
# a percentile), and a check that uses it says why.

RTOL_ULPS = 64
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def _eps_of(value) -> float | None:
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        return float(torch.finfo(dtype).eps) if dtype.is_floating_point else None
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        return None
    return float(np.finfo(dtype).eps) if np.issubdtype(dtype, np.floating) else None


def precision(*values) -> float:
    """The machine epsilon the comparison allows for: the least precise floating dtype among `values` (tensors,
    arrays, numpy scalars), never finer than float32's."""
    return max([FLOAT32_EPS] + [e for e in map(_eps_of, values) if e is not None])


def tolerance(*values, scale: float = 1.0, magnitude: float = 1.0) -> tuple[float, float]:
    """(rtol, atol) for numbers computed in the dtypes of `values` (see the policy above)."""
    rtol = RTOL_ULPS * precision(*values) * scale
    return rtol, rtol * magnitude


def _array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def close(got, want, *, like=(), scale: float = 1.0, magnitude: float = 1.0, slack: float = 0.0) -> bool:
    """True if the number `got` equals `want` within the tolerance for `got`'s dtype (and those of `like`).
    nan equals nan (a right answer may be nan)."""
    rtol, atol = tolerance(got, *like, scale=scale, magnitude=magnitude)
    g, w = float(_array(got).reshape(-1)[0]), float(_array(want).reshape(-1)[0])
    if np.isnan(g) or np.isnan(w):
        return bool(np.isnan(g) and np.isnan(w))
    return abs(g - w) <= atol + (rtol + slack) * abs(w)


def mismatches(got, want, *, like=(), scale: float = 1.0, magnitude: float | None = None,
               slack: float = 0.0) -> np.ndarray:
    """Flat indices where the array/tensor `got` differs from `want` (same number of elements assumed; see
    `allclose` for shapes). `magnitude` defaults to the largest |want|: an element near 0 is compared at the
    tensor's own scale."""
    g, w = _array(got).reshape(-1), _array(want).reshape(-1)
    if magnitude is None:
        finite = np.abs(w[np.isfinite(w)])
        magnitude = float(finite.max()) if finite.size else 1.0
    rtol, atol = tolerance(got, *like, scale=scale, magnitude=magnitude)
    with np.errstate(invalid="ignore"):
        bad = ~((np.abs(g - w) <= atol + (rtol + slack) * np.abs(w)) | (np.isnan(g) & np.isnan(w)))
    return np.nonzero(bad)[0]


def allclose(got, want, *, like=(), scale: float = 1.0, magnitude: float | None = None, slack: float = 0.0) -> bool:
    """True if `got` has `want`'s shape and every element is close (see `mismatches`)."""
    if got is None or np.shape(_array(got)) != np.shape(_array(want)):
        return False
    return len(mismatches(got, want, like=like, scale=scale, magnitude=magnitude, slack=slack)) == 0


# ----------------------------------------------------------------------------- reading what the learner returned

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
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.size != 1 if isinstance(value, np.ndarray) else value.numel() != 1:
            kind = "tensor" if isinstance(value, torch.Tensor) else "array"
            raise CheckFailed(f"{name}() returned {'a ' + part if part else 'a'} {kind} of shape "
                              f"{tuple(value.shape)}; return one number ({hint}).")
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CheckFailed(f"{name}() returned a {type(value).__name__}{of}; return a number.") from None
