import pytest

from qsal_lab.experiments.report import describe_drop, drop_pt


def test_drop_is_float_minus_quantized_in_points():
    assert drop_pt(0.9952, 0.9946) == pytest.approx(0.06)
    assert drop_pt(0.9952, 0.9954) == pytest.approx(-0.02)


@pytest.mark.parametrize("drop, words", [(0.06, "0.06 pt below float"), (-0.02, "0.02 pt above float"),
                                         (0.001, "same as float"), (1.5, "1.50 pt below float")])
def test_describe_drop_says_below_or_above(drop, words):
    assert describe_drop(drop) == words
