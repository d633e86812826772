"""The standalone runner (run.py) on a tiny hand-made bundle: its imports, inputs, JSON, benchmark and errors."""
import ast
import json
import sys

import numpy as np
import pytest
from PIL import Image

from qsal_lab.edge import runner
from qsal_lab.quant.int8 import OnnxClassifier

from .conftest import TINY_CLASSES


def test_runner_imports_only_numpy_onnxruntime_pillow_and_the_standard_library():
    tree = ast.parse(open(runner.__file__).read())
    top = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            top.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"run.py must not import relatively (line {node.lineno})"
            top.add(node.module.split(".")[0])
    outside = {m for m in top if m not in sys.stdlib_module_names} - {"numpy", "onnxruntime", "PIL", "__future__"}
    assert not outside, f"run.py imports {outside}: a device has only numpy, onnxruntime and pillow"


def pixels(rng, n):
    return rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)


def expected_logits(folder, x, model="model_int8.onnx"):
    return OnnxClassifier(folder / model, threads=1)(x).numpy()


def test_npy_batches_float_and_uint8_match_onnxclassifier(tiny_bundle, run_py, tmp_path):
    rng = np.random.default_rng(0)
    raw = pixels(rng, 5)
    x = ((raw[:, None].astype(np.float32) / 255 - 0.5) / 0.25).astype(np.float32)
    np.save(tmp_path / "inputs.npy", x)                 # float: already preprocessed, (N, C, H, W)
    np.save(tmp_path / "pixels.npy", raw)               # uint8: pixels, (N, H, W)
    run = run_py(tiny_bundle, tmp_path / "inputs.npy", tmp_path / "pixels.npy")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["format"] == 1 and out["input_shape"] == [1, 8, 8] and out["dataset"] == "Tiny"
    preds = out["predictions"]
    assert [p["input"] for p in preds] == [f"{tmp_path / 'inputs.npy'}[{i}]" for i in range(5)] + \
        [f"{tmp_path / 'pixels.npy'}[{i}]" for i in range(5)]
    want = expected_logits(tiny_bundle, x)
    for block in (preds[:5], preds[5:]):
        got = np.array([p["logits"] for p in block])
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert [p["class"] for p in block] == want.argmax(1).tolist()
        assert [p["label"] for p in block] == [TINY_CLASSES[k] for k in want.argmax(1)]
        for p in block:
            assert abs(sum(p["probabilities"]) - 1) < 1e-6 and p["probability"] == max(p["probabilities"])
    assert out["latency_ms"]["total"] > 0 and out["peak_rss_mb"] > 0


def test_a_folder_of_pngs_is_read_in_name_order_and_other_files_are_skipped(tiny_bundle, run_py, tmp_path):
    rng = np.random.default_rng(1)
    raw = pixels(rng, 3)
    for i, img in enumerate(raw):
        Image.fromarray(img).save(tmp_path / f"img_{2 - i}.png")  # written in reverse name order
    (tmp_path / "notes.txt").write_text("not an image")
    run = run_py(tiny_bundle, tmp_path)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert [p["input"] for p in out["predictions"]] == [str(tmp_path / f"img_{i}.png") for i in range(3)]
    assert out["skipped"] == [str(tmp_path / "notes.txt")]
    x = ((raw[::-1, None].astype(np.float32) / 255 - 0.5) / 0.25).astype(np.float32)
    np.testing.assert_allclose([p["logits"] for p in out["predictions"]], expected_logits(tiny_bundle, x), atol=1e-5)


def test_bench_reports_single_stream_latency_and_throughput(tiny_bundle, run_py):
    run = run_py(tiny_bundle, "--bench", "--queries", 40, "--seconds", 0, "--warmup", 3, "--batch", 16,
                 "--model", "model_fp32.onnx")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    bench = out["bench"]
    assert bench["queries"] == 40 and bench["batch"] == 1 and bench["threads"] == 1 and bench["input"] == "random"
    assert 0 < bench["min_ms"] <= bench["p50_ms"] <= bench["p90_ms"] <= bench["p99_ms"] <= bench["max_ms"]
    assert bench["throughput"]["batch"] == 16 and bench["throughput"]["images_per_s"] > 0
    assert "predictions" not in out and out["model"].endswith("model_fp32.onnx")


def test_expect_reports_agreement_with_reference_logits(tiny_bundle, run_py, tmp_path):
    raw = pixels(np.random.default_rng(2), 2)
    np.save(tmp_path / "b.npy", raw)
    first = json.loads(run_py(tiny_bundle, tmp_path / "b.npy").stdout)
    logits = {f"b.npy[{i}]": p["logits"] for i, p in enumerate(first["predictions"])}
    logits["b.npy[1]"] = [v + (0.5 if k == 0 else 0) for k, v in enumerate(logits["b.npy[1]"])]
    (tmp_path / "expected.json").write_text(json.dumps({"machine": "elsewhere", "models": {"model_int8.onnx": logits}}))
    out = json.loads(run_py(tiny_bundle, "--expect", tmp_path / "expected.json", tmp_path / "b.npy").stdout)
    agreement = out["agreement"]
    assert agreement["reference"] == "elsewhere" and agreement["inputs"] == 2
    assert abs(agreement["max_abs_logit_diff"] - 0.5) < 1e-6


def one_line_error(run):
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run.py: error: "), run.stderr
    assert run.stdout == ""
    return lines[0]


@pytest.fixture()
def bad_inputs(tmp_path):
    Image.fromarray(np.zeros((10, 8), np.uint8)).save(tmp_path / "wrong_size.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07not a model" * 20)
    (tmp_path / "truncated.png").write_bytes((tmp_path / "good.png").read_bytes()[:40])
    np.save(tmp_path / "wrong_shape.npy", np.zeros((2, 3, 8, 8), np.float32))
    np.save(tmp_path / "ints.npy", np.zeros((2, 8, 8), np.int64))
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["--model", "{t}/missing.onnx", "{t}/good.png"], "no model at {t}/missing.onnx; pass --model PATH"),
    (["--model", "{t}/corrupt.onnx", "{t}/good.png"], "{t}/corrupt.onnx is not a loadable ONNX model ("),
    (["{t}/wrong_size.png"], "{t}/wrong_size.png is 8x10 pixels, the model takes 8x8; resize it"),
    (["{t}/rgb.png"], "{t}/rgb.png has 3 channel(s) (mode RGB), the model takes 1; save it as grey (mode L)"),
    (["{t}/notes.txt"], "{t}/notes.txt: unknown file type '.txt'; give images"),
    (["{t}/truncated.png"], "{t}/truncated.png: cannot read this image ("),
    (["{t}/wrong_shape.npy"], "{t}/wrong_shape.npy holds an array of shape (2, 3, 8, 8), the model takes (N, 1, 8, 8)"),
    (["{t}/ints.npy"], "{t}/ints.npy holds int64 values; save uint8 pixels"),
    (["{t}/nowhere"], "no file or folder {t}/nowhere"),
    (["--spec", "{t}/notes.txt", "{t}/good.png"], "{t}/notes.txt is not valid JSON"),
    ([], "give images, folders or .npy batches to classify, or --bench"),
    (["--threads", "0", "--bench"], "--threads must be an integer >= 1, got 0"),
])
def test_bad_input_gives_one_line_and_exit_2(tiny_bundle, bad_inputs, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tiny_bundle)  # in-process (fast); the next test runs the real process
    argv = ["--spec", str(tiny_bundle / "preprocess.json"), "--labels", str(tiny_bundle / "labels.json")]
    if "--model" not in args:
        argv += ["--model", str(tiny_bundle / "model_int8.onnx")]
    try:
        status = runner.main(argv + [a.format(t=bad_inputs) for a in args])
    except SystemExit as stop:  # argparse's errors
        status = stop.code
    captured = capsys.readouterr()
    line = one_line_error(Completed(status, captured.out, captured.err))
    assert message.format(t=bad_inputs) in line


class Completed:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def test_the_real_process_exits_2_with_one_line(tiny_bundle, run_py, tmp_path):
    line = one_line_error(run_py(tiny_bundle, "--model", tmp_path / "missing.onnx", "--bench"))
    assert f"no model at {tmp_path / 'missing.onnx'}" in line


def test_a_spec_that_does_not_fit_the_model_is_refused(tiny_bundle, run_py, tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps({"height": 28, "width": 28, "channels": 1, "mean": [0], "std": [1]}))
    line = one_line_error(run_py(tiny_bundle, "--spec", tmp_path / "spec.json", "--bench"))
    assert "model_int8.onnx takes inputs of shape" in line and "the spec says (N, 1, 28, 28)" in line


def test_time_queries_and_latency_stats():
    calls = []
    times = runner.time_queries(lambda: calls.append(1), min_queries=7, min_seconds=0)
    assert len(times) == len(calls) == 7 and all(t >= 0 for t in times)
    times = runner.time_queries(lambda: None, min_queries=1, min_seconds=0.02)
    assert len(times) > 1  # kept going until 20 ms had passed
    stats = runner.latency_stats([i * 1_000_000 for i in range(1, 101)])  # 1..100 ms
    assert stats == pytest.approx({"queries": 100, "mean_ms": 50.5, "p50_ms": 50.5, "p90_ms": 90.1, "p99_ms": 99.01,
                                   "min_ms": 1.0, "max_ms": 100.0})
    with pytest.raises(ValueError, match="no timings"):
        runner.latency_stats([])
