"""qsal_lab.pretrained: slim copies of finished runs, in float32 or float16, read back by load_checkpoint."""
import pytest
import torch

from qsal_lab.models import build_model
from qsal_lab.pretrained import slim_checkpoint
from qsal_lab.train import load_checkpoint

SPEC = dict(model="resnet18", num_classes=2, in_channels=1, image_size=28, dataset="pneumoniamnist", width=0.25)


def _finished_run(folder):
    torch.manual_seed(0)
    model = build_model("resnet18", 2, 1, 28, width=0.25).eval()
    folder.mkdir()
    torch.save({"model": model.state_dict(), "optimizer": {}, "model_spec": SPEC, "config": {"seed": 0},
                "history": [], "epoch": 1, "finished": True}, folder / "checkpoint.pt")
    (folder / "metrics.json").write_text("{}")
    return model


def test_float16_slim_checkpoint_loads_back_in_float32(tmp_path):
    model = _finished_run(tmp_path / "run")
    full = slim_checkpoint(tmp_path / "run", tmp_path / "fp32", "qsal train ...")
    half = slim_checkpoint(tmp_path / "run", tmp_path / "fp16", "qsal train ...", dtype="float16")
    size32, size16 = (full / "checkpoint.pt").stat().st_size, (half / "checkpoint.pt").stat().st_size
    assert 0.45 < size16 / size32 < 0.55
    loaded, ckpt = load_checkpoint(half)
    assert ckpt["weights_dtype"] == "float16" and ckpt["model_spec"] == SPEC and "optimizer" not in ckpt
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(loaded(x), model(x), atol=1e-2, rtol=1e-2)  # float16 rounding only
    assert (half / "COMMAND").read_text() == "qsal train ...\n"
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float16'"):
        slim_checkpoint(tmp_path / "run", tmp_path / "x", "c", dtype="int8")
