import pytest

from qsal_lab.experiments.report import describe_drop, drop_pt


def test_drop_is_float_minus_quantized_in_points():
    assert drop_pt(0.9952, 0.9946) == pytest.approx(0.06)
    assert drop_pt(0.9952, 0.9954) == pytest.approx(-0.02)


@pytest.mark.parametrize("drop, words", [(0.06, "0.06 pt below float"), (-0.02, "0.02 pt above float"),
                                         (0.001, "same as float"), (1.5, "1.50 pt below float")])
def test_describe_drop_says_below_or_above(drop, words):
    assert describe_drop(drop) == words


def test_write_results_writes_json_and_markdown_and_says_where(tmp_path, capsys):
    import json
    from pathlib import Path

    from qsal_lab.experiments.report import load_average, write_results

    result = {"figure": 1.5, "path": Path("a/b"), **load_average("start")}
    write_results(tmp_path / "results", "demo", result, "# Demo\n")
    assert json.loads((tmp_path / "results" / "demo.json").read_text())["path"] == "a/b"  # default=str
    assert (tmp_path / "results" / "demo.md").read_text() == "# Demo\n"
    assert "demo.json" in capsys.readouterr().out
    assert set(load_average("end")) == {"loadavg_1min_end", "loadavg_5min_end"}
    assert not list((tmp_path / "results").glob("*.tmp*"))  # atomic: no temporary file left


def test_meets_reads_the_target_the_way_it_is_written():
    import pytest

    from qsal_lab.experiments.report import meets

    assert meets(1.0, 1.0, "≤") and meets(1.0, 1.0, "≥") and not meets(1.0, 1.0, ">") and not meets(1.0, 1.0, "<")
    assert meets(2.1, 2.0, ">") and not meets(2.1, 2.0, "≤")
    with pytest.raises(ValueError, match="unknown target comparison"):
        meets(1.0, 1.0, "=")


def test_markdown_table_escapes_pipes_and_aligns_numbers_right():
    from qsal_lab.experiments.report import markdown_table

    assert markdown_table(["a", "b"], [[1, "x|y"]]) == "| a | b |\n|---|---|\n| 1 | x\\|y |"
    assert markdown_table(["a", "b", "c"], [], numbers_right=True).splitlines()[1] == "|---|---:|---:|"


def test_jsonable_writes_rows_numpy_and_nan():
    import numpy as np

    from qsal_lab.experiments.report import jsonable
    from qsal_lab.experiments.study import Row

    assert jsonable(np.float32(0.5)) == 0.5 and jsonable(np.arange(2)) == [0, 1] and jsonable(float("nan")) is None
    assert jsonable(Row("FP32", "MNIST", accuracy=0.9, notes={"test_probs": [1]}))["accuracy"] == 0.9
