"""What every chapter's checks share: the failure type, calling the learner's function, reading the
numbers it returns, and the pass message. Each chapter's checks live in a module of their own
(`qsal_lab.checks.<chapter>`); notebooks import them from there, e.g.

    from qsal_lab.checks.pact import check_pact_forward
"""
from __future__ import annotations

import torch


class CheckFailed(AssertionError):
    """A learner's answer is not right yet; the message says what to fix."""


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
