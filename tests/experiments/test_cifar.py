"""The CIFAR-10 study (qsal_lab.experiments.cifar) at the ci budget on a small stand-in, its helpers, and the
shipped stand-in checkpoints' recorded figures (the difficulty band)."""
import json

import pytest

from qsal_lab.experiments import cifar
from qsal_lab.experiments.study import Precision, find_row

BAND = (0.75, 0.92)  # ResNet-20 at the book budget on the stand-in v3: clearly below 100 %


@pytest.fixture
def small_standin(monkeypatch):
    from qsal_lab import data, standin

    monkeypatch.setenv("QSAL_STANDIN", "1")
    monkeypatch.setattr(standin, "STANDIN_SIZES", {"train": 800, "test": 300})
    standin._memoised.cache_clear()
    yield data.dataset_info("cifar10-standin")
    standin._memoised.cache_clear()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Using the synthetic CIFAR-10 STAND-IN")
def test_the_study_runs_every_row_at_ci_and_names_the_standin(small_standin, tmp_path):
    study = cifar.run_study(tmp_path, budget="ci", use_shipped=False, progress=False)
    assert study["key"] == small_standin.name and study["standin"] and study["version"] == "v3"
    rows = study["rows"]
    assert [r.model for r in rows] == list(cifar.ROWS)
    for r in rows:
        assert r.data == small_standin.display_name and 0 <= r.accuracy <= 1, r.model
        assert r.drop_pt == pytest.approx(100 * (rows[0].accuracy - r.accuracy))
    ort = find_row(rows, "PTQ int8 (ORT)")
    assert ort.latency_ms > 0 and ort["eager_latency_ms"] > 0 and ort["file_vs_fp32"] < 0.35
    assert ort.precision == Precision(8, 8, 8) and ort["file_vs_fp32"] == ort.file_bytes / ort["fp32_file_bytes"]
    for method in ("PTQ W4A4", "PACT W2A2", "SGT + PACT W4A4"):
        assert find_row(rows, method)["file_vs_fp32"] < 0.3
    pact = find_row(rows, "PACT W4A4")
    assert pact["source"].startswith("fine-tuned in this run") and pact["history"][-1]["alphas"]
    assert find_row(rows, "PACT W2A2")["step"]["weight_quant"] == "dorefa"
    assert pact["step"]["weight_quant"] == "symmetric"
    assert find_row(rows, "SGT + PACT W4A4")["step"]["sgt_fraction"] == cifar.SGT_FRACTION
    table = cifar.format_table(rows)
    assert table.count("\n") == len(rows) + 1 and "| SGT + PACT W4A4 | 4/4 |" in table
    fig = cifar.plot_alpha_curves(pact["history"], small_standin, alpha_init=4.0)
    assert small_standin.display_name in fig._suptitle.get_text()


def test_titles_and_banner_name_the_data():
    from qsal_lab.data import dataset_info

    standin, real = dataset_info("cifar10-standin"), dataset_info("cifar10")
    assert cifar.title("PTQ vs PACT", standin) == "PTQ vs PACT (CIFAR-10 stand-in (synthetic) v3)"
    assert cifar.title("PTQ vs PACT", real) == "PTQ vs PACT (CIFAR-10)"
    assert "not CIFAR-10" in cifar.banner(standin) and "synthetic" in cifar.banner(standin)
    assert cifar.banner(real) == ""


def test_detect_data_falls_back_to_the_stand_in_and_says_why(tmp_path, monkeypatch):
    monkeypatch.delenv("QSAL_STANDIN", raising=False)
    monkeypatch.setattr("torchvision.datasets.CIFAR10.download", lambda self: None)  # offline, whatever the machine
    data = cifar.detect_data("ci", root=tmp_path)  # an empty folder: no CIFAR-10 there
    assert data.standin and "CIFAR-10 is not available here" in data.reason
    monkeypatch.setenv("QSAL_STANDIN", "1")
    assert cifar.detect_data("ci", root=tmp_path).reason == "QSAL_STANDIN=1 asked for the stand-in."


def test_mixed_bits_puts_the_least_sensitive_inner_layers_at_two_bits():
    sens = [{"layer": "conv1", "parameters": 432, "drop_pt": 50.0}]
    sens += [{"layer": f"l{i}", "parameters": 100, "drop_pt": float(d)} for i, d in enumerate([5, 1, 9, 3])]
    sens += [{"layer": "fc", "parameters": 640, "drop_pt": 20.0}]
    assert cifar.mixed_bits(sens) == {"l0": 4, "l1": 2, "l2": 4, "l3": 2}  # half of the inner weights
    assert cifar.mixed_bits(sens, reverse=True) == {"l0": 2, "l1": 4, "l2": 2, "l3": 4}
    assert cifar.mixed_bits(sens, share=1.0) == {f"l{i}": 2 for i in range(4)}


@pytest.mark.filterwarnings("ignore:Using the synthetic CIFAR-10 STAND-IN")
def test_sensitivity_scans_every_layer_on_the_holdout_split(small_standin, tmp_path):
    from qsal_lab.models import build_model

    data = cifar.cifar_data("ci")
    rows = cifar.layer_sensitivity(build_model("resnet20", 10, 3, 32), data, progress=False)
    assert [r["layer"] for r in rows][:2] == ["conv1", "layers.0.0.conv1"] and rows[-1]["layer"] == "fc"
    assert len(rows) == 20 and all(r["drop_pt"] == pytest.approx(100 * (r["float_accuracy"] - r["accuracy"]))
                                   for r in rows)


def test_the_real_data_path_on_a_cifar10_format_fixture(tmp_path, monkeypatch):
    from tests.fixtures.cifar10 import synthetic_cifar10

    monkeypatch.delenv("QSAL_STANDIN", raising=False)
    root = synthetic_cifar10(monkeypatch, tmp_path)
    data = cifar.cifar_data("ci", root=root, recipe=cifar.cifar_recipe("ci", holdout=50, holdout_subset=None,
                                                                        test_subset=None))
    assert data.key == "cifar10" and data.name == "CIFAR-10" and not data.standin and cifar.banner(data.info) == ""
    assert len(data.holdout) == 50 and len(data.test) == 50 and len(data.calib) == 128


def test_offline_cifar10_without_the_standin_names_qsal_standin(tmp_path, monkeypatch):
    from qsal_lab.data import DataError

    monkeypatch.delenv("QSAL_STANDIN", raising=False)
    monkeypatch.setenv("QSAL_DATA", str(tmp_path))
    with pytest.raises(DataError, match="QSAL_STANDIN=1"):
        cifar.cifar_data("ci", download=False)


def test_the_shipped_float_model_is_labelled_and_inside_the_difficulty_band():
    from qsal_lab.pretrained import pretrained_dir

    folder = pretrained_dir(cifar.PRETRAINED)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["config"]["dataset"] == "cifar10-standin-v3" and "stand-in" in metrics["config"]["dataset_name"]
    shipped = metrics["shipped"]
    assert shipped["dataset"] == "CIFAR-10 stand-in (synthetic) v3" and shipped["test_n"] == 10000
    assert BAND[0] <= shipped["test_accuracy"] <= BAND[1], shipped["test_accuracy"]
    assert (folder / "checkpoint.pt").stat().st_size < 2_000_000
    assert "ship_pretrained" in (folder / "COMMAND").read_text()


def test_the_shipped_selection_chose_the_best_candidate_on_the_holdout_split():
    sel = cifar.selection()
    assert sel["source"].endswith("selection.json") and "held-out" in sel["criterion"]
    best = max(sel["candidates"], key=lambda c: c["mean_holdout_accuracy"])
    assert sel["chosen"] == {k: best[k] for k in ("optimizer", "lr", "weight_decay", "alpha_lr_scale")}
    assert len(sel["candidates"]) == len(cifar.PACT_CANDIDATES)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Using the synthetic CIFAR-10 STAND-IN")
def test_selection_and_mixed_precision_run_at_ci(small_standin, tmp_path):
    data = cifar.cifar_data("ci")
    _, ckpt, source = cifar.float_model(data, "ci", tmp_path, progress=False)
    two = cifar.PACT_CANDIDATES[:2]
    sel = cifar.choose_pact_hparams(data, ckpt, tmp_path / "sel", candidates=two, bits=(2,), budget="ci",
                                    progress=False)
    assert sel["chosen"] in [dict(c) for c in two] and "held-out" in sel["criterion"]
    assert all(0 <= c["holdout_accuracy"]["W2A2"] <= 1 and c["final_alphas"]["W2A2"] for c in sel["candidates"])
    from qsal_lab.models import build_model
    from qsal_lab.quant.convert import layer_names

    names = layer_names(build_model("resnet20", 10, 3, 32))["weights"]
    sens = [{"layer": n, "parameters": 1, "drop_pt": float(i % 7)} for i, n in enumerate(names)]
    rows = cifar.mixed_precision_rows(ckpt, data, sens, tmp_path / "mixed", budget="ci", progress=False)
    assert [r.model.split(" (")[0] for r in rows] == ["mixed W4/W2", "mixed W4/W2", "uniform W4A4", "uniform W2A2"]
    by = {r.model: r for r in rows}
    assert by["uniform W2A2"].file_bytes < by["mixed W4/W2 (least sensitive at 2 bits)"].file_bytes \
        < by["uniform W4A4"].file_bytes
    assert rows[0]["low_bit_layers"] == sorted(n for n, b in cifar.mixed_bits(sens).items() if b == 2)
    assert rows[0].precision.layers == cifar.mixed_bits(sens) and rows[0].precision.activations == 4
