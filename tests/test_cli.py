import json
import os
import subprocess
import sys

import pytest

from qsal_lab.cli import main


def run(*args):
    """The installed entry point, as a user runs it: (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "qsal_lab.cli", *args], capture_output=True, text=True, timeout=600)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("cmd", [[], ["data"], ["train"], ["eval"], ["saliency"], ["export"], ["ptq"]])
def test_help_everywhere(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0 and "usage: qsal" in capsys.readouterr().out


def test_top_level_help_lists_the_environment_variables(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(v in out for v in ("QSAL_DATA", "QSAL_BUDGET", "QSAL_STANDIN", "QSAL_DEBUG"))


@pytest.mark.parametrize("args,message", [
    (["train", "--dataset", "mnits", "--out", "x"], "unknown dataset 'mnits'; valid names: mnist"),
    (["train", "--dataset", "mnist", "--model", "vgg", "--out", "x"], "no recipe for model 'vgg'"),
    (["train", "--dataset", "mnist", "--method", "pact", "--w-bits", "5.5", "--out", "x"], "invalid int value"),
    (["eval", "--checkpoint", "does/not/exist.pt"], "no checkpoint at does/not/exist.pt"),
    (["train", "--dataset", "mnist", "--method", "pact", "--w-bits", "9", "--out", "x"],
     "invalid bit width 9 for QATConfig.w_bits: use an integer from 2 to 8, or 32 for float"),
    (["train", "--dataset", "mnist", "--a-bits", "4", "--out", "x"], "--a-bits needs --method pact"),
    (["train", "--dataset", "mnist", "--method", "pact", "--pact-alpha", "0", "--out", "x"],
     "QATConfig.pact_alpha must be > 0"),
    (["train", "--dataset", "mnist", "--epochs", "0", "--out", "x"], "epochs must be a positive integer, got 0"),
    (["train", "--dataset", "mnist", "--lr", "-1", "--out", "x"], "lr (the learning rate) must be > 0"),
    (["ptq", "--checkpoint", "x", "--out", "x.onnx", "--calib", "0"], "--calib must be a positive number"),
    (["train", "--dataset", "mnist", "--mask-fraction", "0.5", "--out", "x"], "--mask-fraction needs --method sgt"),
    (["train", "--dataset", "mnist", "--method", "sgt", "--w-bits", "4", "--out", "x"], "--w-bits needs --method pact"),
    (["train", "--dataset", "mnist", "--method", "sgt", "--mask-fraction", "1.5", "--out", "x"],
     "SGTConfig.fraction must be a number strictly between 0 and 1"),
    (["train", "--dataset", "mnist", "--method", "pact+sgt", "--sgt-lambda", "-1", "--out", "x"],
     "SGTConfig.lam (the KL weight) must be a number >= 0"),
    (["train", "--dataset", "mnist", "--method", "saliency", "--out", "x"], "invalid choice: 'saliency'"),
    (["train", "--dataset", "mnist", "--sgt-signed", "--out", "x"], "--sgt-signed needs --method sgt"),
    (["train", "--dataset", "mnist", "--method", "pact", "--sgt-no-detach", "--out", "x"],
     "--sgt-no-detach needs --method sgt"),
    (["saliency", "--out", "m.png"], "give exactly one model: --checkpoint C"),
    (["saliency", "--checkpoint", "x", "--onnx", "y", "--out", "m.png"], "give exactly one model"),
    (["saliency", "--checkpoint", "x", "--images", "0", "--out", "m.png"], "--images must be a positive number"),
    (["saliency", "--checkpoint", "x", "--method", "lime", "--out", "m.png"],
     "unknown attribution method 'lime'; choose one of: saliency, ig, smoothgrad, gradcam, occlusion"),
    (["saliency", "--onnx", "m.onnx", "--method", "ig", "--out", "m.png"],
     "--method ig needs gradients, which an ONNX model does not have; use --method occlusion"),
    (["saliency", "--checkpoint", "x", "--fractions", "0,2", "--out", "m.png"], "fractions must be increasing numbers"),
    (["train", "--dataset", "organmnist3d", "--out", "x"], "'organmnist3d' is a 3D MedMNIST flag"),
    (["train", "--dataset", "pathmnist", "--size", "32", "--out", "x"], "MedMNIST images come in sizes 28, 64, 128, 224"),
    (["train", "--dataset", "mnist", "--imbalance", "oversample", "--out", "x"], "invalid choice: 'oversample'"),
    (["eval", "--checkpoint", "x", "--target-sensitivity", "0.9"], "--target-sensitivity needs --threshold sensitivity"),
])
def test_bad_input_is_one_clear_line(args, message):
    code, out, err = run(*args)
    last = err.strip().splitlines()[-1]  # argparse prints its usage first; the error is one line
    assert code == 2 and message in last and last.startswith("qsal") and "Traceback" not in err


def test_missing_data_is_explained(tmp_path):
    code, out, err = run("train", "--dataset", "cifar10", "--out", str(tmp_path), "--epochs", "1")
    if code == 0:
        pytest.skip("CIFAR-10 downloaded: this machine is online")
    assert code == 2 and "cifar-10-batches-py/data_batch_1: c99cafc152244af753f735de768cd75f" in err
    assert "Traceback" not in err


def test_data_lists_what_is_present(data_root, capsys):
    assert main(["data", "--root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "mnist           present, checksums match" in out
    assert "stand-in" in out


@pytest.mark.parametrize("dataset,extra", [("mnist", []), ("pneumoniamnist", ["--test-subset", "200"])])
def test_train_then_eval(dataset, extra, data_root, tmp_path, capsys):
    out = tmp_path / dataset
    assert main(["train", "--dataset", dataset, "--out", str(out), "--budget", "ci", "--epochs", "1",
                 "--train-subset", "600", *extra]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["dataset"] == dataset and metrics["final"]["epoch"] == 1
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--json", "--subset", "300"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 300 and 0 <= result["accuracy"] <= 1 and "auc" in result
    if dataset == "pneumoniamnist":  # clinical metrics at the threshold chosen on the validation split
        assert {"sensitivity", "specificity", "ppv", "npv", "ci", "ece"} <= result.keys()
        assert result["threshold_chosen_on"] == "val" and result["threshold_method"] == "youden"
        assert 0 <= result["threshold"] <= 1 and "Youden" in result["threshold_rule"]


PRETRAINED = "qsal_lab/pretrained/mnist_smallcnn"


def test_pact_train_from_float_then_eval(data_root, tmp_path, capsys):
    out = tmp_path / "pact"
    assert main(["train", "--dataset", "mnist", "--method", "pact", "--w-bits", "4", "--a-bits", "4",
                 "--init-from", PRETRAINED, "--epochs", "1", "--train-subset", "500", "--test-subset", "500",
                 "--lr", "5e-4", "--pact-alpha", "6", "--alpha-l2", "1e-3", "--alpha-lr-scale", "10", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    quant = metrics["config"]["quant"]
    assert (quant["w_bits"], quant["pact_alpha"], quant["alpha_l2"], quant["alpha_lr_scale"]) == (4, 6.0, 1e-3, 10.0)
    assert metrics["final"]["alphas"]
    assert metrics["final"]["test_accuracy"] > 0.9  # fine-tuned from a 99.5 % float model
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--json", "--subset", "500"]) == 0  # rebuilt as a PACT model
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(metrics["final"]["test_accuracy"])


def test_export_and_ptq(data_root, tmp_path):
    code, out, err = run("export", "--checkpoint", PRETRAINED, "--out", str(tmp_path / "m.onnx"))
    assert code == 0, err
    assert (tmp_path / "m.onnx").stat().st_size > 1_000_000
    code, out, err = run("ptq", "--checkpoint", PRETRAINED, "--out", str(tmp_path / "m_int8.onnx"), "--calib", "128")
    assert code == 0, err
    fp32, int8 = (tmp_path / "m_fp32.onnx").stat().st_size, (tmp_path / "m_int8.onnx").stat().st_size
    assert int8 < 0.3 * fp32
    umask = os.umask(0)
    os.umask(umask)
    for name in ("m.onnx", "m_fp32.onnx", "m_int8.onnx"):  # ordinary files, not private temp files
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    code, out, err = run("ptq", "--checkpoint", PRETRAINED, "--out", str(tmp_path / "x.onnx"), "--method", "kl")
    assert code == 2 and "invalid choice: 'kl'" in err


def test_export_of_a_pact_checkpoint_is_an_integer_graph(data_root, tmp_path, capsys):
    from qsal_lab.quant.qdq import executed_ops

    pact = "qsal_lab/pretrained/mnist_pact_w4a4"
    assert main(["export", "--checkpoint", pact, "--out", str(tmp_path / "p.onnx"), "--calib", "64"]) == 0
    assert "PACT W4A4 as integer QDQ" in capsys.readouterr().out
    ops = [node["op"] for node in executed_ops(tmp_path / "p.onnx")]
    assert "QLinearConv" in ops, ops  # not the float graph with fake-quant arithmetic
    assert main(["export", "--checkpoint", pact, "--out", str(tmp_path / "q.onnx"), "--calib", "0"]) == 2
    assert "--calib must be a positive number" in capsys.readouterr().err


@pytest.mark.slow  # ~10 s: export and ONNX Runtime quantization first
def test_saliency_on_the_int8_onnx_model(data_root, tmp_path, capsys):
    assert main(["ptq", "--checkpoint", PRETRAINED, "--out", str(tmp_path / "m_int8.onnx"), "--calib", "64"]) == 0
    capsys.readouterr()
    assert main(["saliency", "--onnx", str(tmp_path / "m_int8.onnx"), "--images", "20", "--fractions", "0,0.05,0.1",
                 "--out", str(tmp_path / "onnx.png"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # the dataset comes from the file's metadata
    assert summary["method"] == "occlusion" and summary["dataset"] == "mnist" and summary["fractions"] == [0, 0.05, 0.1]
    assert summary["accuracy"] > 0.9


def test_pact_sgt_train_then_saliency(data_root, tmp_path, capsys):
    out = tmp_path / "pact_sgt"
    assert main(["train", "--dataset", "mnist", "--method", "pact+sgt", "--w-bits", "4", "--a-bits", "4",
                 "--pact-alpha", "6", "--mask-fraction", "0.3", "--sgt-lambda", "0.5", "--init-from", PRETRAINED,
                 "--epochs", "1", "--train-subset", "500", "--test-subset", "500", "--lr", "5e-4",
                 "--out", str(out)]) == 0
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert (config["sgt"]["fraction"], config["sgt"]["lam"], config["quant"]["w_bits"]) == (0.3, 0.5, 4)
    capsys.readouterr()
    assert main(["saliency", "--checkpoint", str(out), "--images", "40", "--out", str(tmp_path / "maps.png"),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "saliency" and summary["images"] == 40 and summary["dataset"] == "mnist"
    assert 0 <= summary["faithfulness_area"] <= 1 and 0 <= summary["random_area"] <= 1 and 0 < summary["gini"] < 1
    assert summary["accuracy"] > 0.9 and (tmp_path / "maps.png").stat().st_size > 0


def test_sgt_fraction_defaults_to_the_papers(data_root, tmp_path):
    assert main(["train", "--dataset", "mnist", "--method", "sgt", "--epochs", "1", "--train-subset", "200",
                 "--test-subset", "100", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["config"]["sgt"]["fraction"] == 0.5


def test_the_authors_sgt_variant_and_a_holdout_curve(data_root, tmp_path):
    assert main(["train", "--dataset", "mnist", "--method", "sgt", "--sgt-signed", "--sgt-no-detach", "--holdout",
                 "100", "--epochs", "2", "--train-subset", "200", "--test-subset", "100", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    sgt = metrics["config"]["sgt"]
    assert (sgt["abs"], sgt["detach_target"], metrics["config"]["holdout"]) == (False, False, 100)
    assert [e["holdout_n"] for e in metrics["history"]] == [100, 100]
    assert all(0 <= e["holdout_accuracy"] <= 1 for e in metrics["history"])



@pytest.mark.slow  # trains a small ResNet-18 (~15 s)
def test_medmnist_train_options_and_screening_threshold(data_root, tmp_path, capsys):
    out = tmp_path / "pneu"
    assert main(["train", "--dataset", "pneumoniamnist", "--model", "resnet18", "--width", "0.25", "--imbalance",
                 "sampler", "--augment", "shift", "--budget", "ci", "--epochs", "1", "--train-subset", "300",
                 "--test-subset", "100", "--out", str(out)]) == 0
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["imbalance"] == "sampler" and config["recipe"]["augment"] == "shift"
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--subset", "200", "--threshold", "sensitivity",
                 "--target-sensitivity", "0.9", "--n-boot", "100", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["threshold_method"] == "sensitivity" and result["target_sensitivity"] == 0.9
    assert result["n"] == 200 and result["val_n"] == 524
    low, high = result["ci"]["auc"]
    assert low <= result["auc"] <= high
    assert main(["eval", "--checkpoint", str(out), "--subset", "200", "--n-boot", "50"]) == 0
    text = capsys.readouterr().out
    assert "decision: Youden's J on the validation split (n=524)" in text and "95% bootstrap CI" in text


@pytest.mark.slow  # trains and quantizes on a synthetic file (~20 s)
def test_train_ptq_eval_on_another_flag(tmp_path, monkeypatch, capsys):
    """bloodmnist here is a SYNTHETIC file in MedMNIST's layout (tests/fixtures/medmnist.py), not BloodMNIST."""
    from tests.fixtures.medmnist import synthetic_medmnist

    monkeypatch.setenv("QSAL_DATA", str(synthetic_medmnist(monkeypatch, tmp_path / "data", "bloodmnist")))
    out = tmp_path / "blood"
    assert main(["train", "--dataset", "bloodmnist", "--model", "resnet18", "--width", "0.25", "--imbalance",
                 "weighted_loss", "--budget", "ci", "--epochs", "1", "--out", str(out)]) == 0
    assert main(["ptq", "--checkpoint", str(out), "--out", str(tmp_path / "blood_int8.onnx"), "--calib", "64"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--json", "--n-boot", "50"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["threshold"] is None and result["threshold_method"] == "argmax" and len(result["confusion"]) == 8


def test_data_download_fetches_every_split_and_names_a_wrong_dataset(data_root, capsys):
    assert main(["data", "--download", "pneumoniamnist"]) in (0, None)
    out = capsys.readouterr().out
    assert all(f"pneumoniamnist {split}: ready" in out for split in ("train", "val", "test"))
    code, out, err = run("data", "--download", "mnits")
    assert code == 2 and "unknown dataset 'mnits'" in err and "Traceback" not in err
