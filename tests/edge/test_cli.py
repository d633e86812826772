"""`qsal bench` and `qsal deploy` at the ci budget: they run, print what they promise, and fail in one line."""
import json

import pytest

from qsal_lab.cli import main


def test_qsal_bench_json_and_table(tiny_bundle, capsys):
    fp32, int8 = tiny_bundle / "model_fp32.onnx", tiny_bundle / "model_int8.onnx"
    assert main(["bench", str(fp32), str(int8), "--batch", "4", "--queries", "8", "--seconds", "0", "--json",
                 "--budget", "ci"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["backend"] for r in result["rows"]] == [str(fp32), str(int8)]
    for row in result["rows"]:
        assert row["threads"] == 1 and row["queries"] >= 8 and row["throughput"][0]["batch"] == 4
        assert row["peak_rss_mb"] > 0 and row["file_bytes"] == (fp32 if row["backend"] == str(fp32) else int8).stat().st_size
    assert main(["bench", str(int8), "--queries", "8", "--seconds", "0"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("batch 1, 1 thread(s), >= 8 queries") and table[1].startswith("| backend |")
    assert table[3].startswith(f"| {int8} | 1 |")


@pytest.mark.parametrize("args, message", [
    (["bench", "{t}/missing.onnx"], "no ONNX model at {t}/missing.onnx"),
    (["bench", "{t}/labels.json"], "qsal bench times .onnx files"),
    (["bench", "{t}/model_int8.onnx", "--threads", "0"], "--threads must be an integer >= 1, got 0"),
    (["bench", "{t}/model_int8.onnx", "--queries", "0"], "--queries must be an integer >= 1, got 0"),
    (["deploy", "--checkpoint", "{t}/nowhere", "--out", "{t}/out"], "no checkpoint at {t}/nowhere"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_bundle, capsys, args, message):
    assert main([a.format(t=tiny_bundle) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"qsal {args[0]}: error: ") and message.format(t=tiny_bundle) in err[0]


@pytest.mark.slow
def test_qsal_deploy_writes_a_bundle(tmp_path, mnist_root, capsys):
    from qsal_lab.edge.deploy import BUNDLE_FILES
    from qsal_lab.pretrained import pretrained_dir

    assert main(["deploy", "--checkpoint", str(pretrained_dir("mnist_smallcnn")), "--out", str(tmp_path / "b"),
                 "--calib", "64", "--samples", "2"]) == 0
    assert "README.md (the steps on the Raspberry Pi)" in capsys.readouterr().out
    assert all((tmp_path / "b" / name).is_file() for name in BUNDLE_FILES)
    assert len(list((tmp_path / "b" / "samples").glob("*.png"))) == 2
