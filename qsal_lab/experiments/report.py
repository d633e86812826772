"""How the book and the benchmarks say how far a quantized model is from its float model.

One convention everywhere: the **drop** is float accuracy minus quantized accuracy, in percentage
points (pt). A positive drop is a loss, a negative one a gain; in words, "0.06 pt below float" or
"0.02 pt above float", never a bare signed number.
"""
from __future__ import annotations


def drop_pt(float_accuracy: float, accuracy: float) -> float:
    """Float minus quantized accuracy in percentage points (accuracies as fractions): positive = worse."""
    return 100.0 * (float(float_accuracy) - float(accuracy))


def describe_drop(drop: float, digits: int = 2, reference: str = "float") -> str:
    """A drop in words: 0.06 -> '0.06 pt below float', -0.02 -> '0.02 pt above float', 0 -> 'same as float'."""
    if round(drop, digits) == 0:
        return f"same as {reference}"
    return f"{abs(drop):.{digits}f} pt {'below' if drop > 0 else 'above'} {reference}"
