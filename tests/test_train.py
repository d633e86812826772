import json

import pytest
import torch
from torch.utils.data import TensorDataset

from qsal_lab.models import build_model
from qsal_lab.train import (confusion_matrix, evaluate, fit, get_device, load_checkpoint, metrics_from_logits,
                            predict, seed_everything, train_step)

SPEC = dict(model="smallcnn", num_classes=10, in_channels=1, image_size=28, dataset="mnist")


@pytest.fixture(scope="module")
def tiny(mnist_root):
    from qsal_lab.data import load_dataset
    return (load_dataset("mnist", "train", root=mnist_root, subset=512, seed=0),
            load_dataset("mnist", "test", root=mnist_root, subset=256, seed=0))


def test_short_training_lowers_the_loss(tiny):
    seed_everything(0)
    model = build_model("smallcnn")
    before = evaluate(model, torch.utils.data.DataLoader(tiny[1], batch_size=128))["loss"]
    history = fit(model, *tiny, epochs=2, lr=3e-3, progress=False)
    assert history["test_loss"][-1] < 0.7 * before
    assert history["train_loss"][1] < history["train_loss"][0]
    assert history.final["test_accuracy"] > 0.6


def test_resume_equals_uninterrupted(tiny, tmp_path):
    seed_everything(0)
    whole = build_model("smallcnn")
    fit(whole, *tiny, epochs=3, lr=3e-3, progress=False, out=tmp_path / "a", model_spec=SPEC)

    class Crash(Exception):
        pass

    def crash_after_first_epoch(model):
        if crash_after_first_epoch.calls == 1:
            raise Crash
        crash_after_first_epoch.calls += 1
        return {}
    crash_after_first_epoch.calls = 0
    seed_everything(0)
    broken = build_model("smallcnn")
    with pytest.raises(Crash):
        fit(broken, *tiny, epochs=3, lr=3e-3, progress=False, out=tmp_path / "b", model_spec=SPEC,
            log_fn=crash_after_first_epoch)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["epoch"] == 1
    resumed = build_model("smallcnn")  # a fresh process would start from new random weights
    history = fit(resumed, *tiny, epochs=3, lr=3e-3, progress=False, out=tmp_path / "b", model_spec=SPEC)
    assert [e["epoch"] for e in history.epochs] == [1, 2, 3]
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["final"]["epoch"] == 3
    assert not list((tmp_path / "b").glob("*.tmp"))  # atomic writes leave no temp files


def test_checkpoint_round_trip(tiny, tmp_path):
    model = build_model("smallcnn")
    fit(model, *tiny, epochs=1, lr=3e-3, progress=False, out=tmp_path, model_spec=SPEC)
    loaded, ckpt = load_checkpoint(tmp_path)
    x = torch.stack([tiny[1][i][0] for i in range(8)])
    assert torch.equal(loaded(x), model.eval()(x))
    assert ckpt["finished"] and ckpt["model_spec"] == SPEC


def test_bad_checkpoints_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable qsal checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_train_step_updates_and_returns_loss():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    losses = [train_step(model, x, y, opt) for _ in range(20)]
    assert losses[-1] < losses[0] * 0.8


def test_binary_metrics_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 1, 0, 1, 1])
    m = metrics_from_logits(logits, labels)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(1 / 2)
    # AUC by hand: p(class 1) = sigmoid(l1 - l0); pairs (pos, neg) ranked right: 5 of 6
    assert m["auc"] == pytest.approx(5 / 6)


def test_multiclass_auc_and_confusion():
    logits = torch.eye(3).repeat(2, 1)
    labels = torch.tensor([0, 1, 2, 0, 1, 1])
    m = metrics_from_logits(logits, labels)
    assert m["accuracy"] == pytest.approx(5 / 6) and 0 < m["auc"] <= 1
    assert confusion_matrix(logits, labels).tolist() == [[2, 0, 0], [0, 2, 1], [0, 0, 1]]


def test_predict_accepts_plain_callables():
    ds = TensorDataset(torch.randn(10, 4), torch.randint(0, 2, (10,)))
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    logits, labels = predict(lambda x: x[:, :2].numpy(), loader)  # e.g. an ONNX session returning numpy
    assert logits.shape == (10, 2) and labels.shape == (10,)


def test_device_auto_is_cpu_here():
    assert get_device("auto").type in ("cpu", "cuda", "mps")
    assert get_device("cpu").type == "cpu"


def test_pact_alphas_get_their_own_learning_rate_and_no_weight_decay():
    from qsal_lab.quant import QATConfig, quantize_model
    from qsal_lab.train import make_optimizer

    model = quantize_model(build_model("smallcnn"), QATConfig(w_bits=4, a_bits=4))
    opt = make_optimizer(model, "adamw", lr=1e-3, weight_decay=1e-4, alpha_lr_scale=30)
    weights, alphas = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].rsplit(".", 1)[-1] for p in alphas["params"]} == {"alpha"}
    assert len(weights["params"]) + len(alphas["params"]) == len(list(model.parameters()))
    assert (weights["lr"], weights["weight_decay"]) == (1e-3, 1e-4)
    assert (alphas["lr"], alphas["weight_decay"]) == pytest.approx((3e-2, 0.0))
    assert len(make_optimizer(build_model("smallcnn"), "sgd", 0.1, 0.0).param_groups) == 1  # no PACT, one group


def test_alpha_lr_scale_makes_alpha_travel_further(tiny):
    from qsal_lab.quant import QATConfig, pact_alphas, quantize_model

    moved = {}
    for scale in (1.0, 30.0):
        seed_everything(0)
        model = quantize_model(build_model("smallcnn"), QATConfig(w_bits=4, a_bits=4, pact_alpha=4.0))
        fit(model, tiny[0], epochs=1, lr=1e-3, batch_size=32, alpha_lr_scale=scale, progress=False)
        moved[scale] = max(abs(a - 4.0) for a in pact_alphas(model).values())
    assert moved[30.0] > 5 * moved[1.0]  # OneCycle scales each group's own peak


# ----------------------------------------------------------------------------- saliency-guided training

def test_fit_with_an_sgt_step_resumes_to_the_same_weights(tiny, tmp_path):
    """SGT draws its replacement noise from torch's RNG, which fit seeds per epoch: still resumable."""
    from qsal_lab.saliency import SGTConfig

    step = SGTConfig(fraction=0.5).train_step()
    small = torch.utils.data.Subset(tiny[0], range(256))
    seed_everything(0)
    whole = build_model("smallcnn")
    fit(whole, small, epochs=2, lr=3e-3, step_fn=step, progress=False, out=tmp_path / "a", model_spec=SPEC)

    def crash(model, calls=[]):  # after epoch 1 is saved: log_fn runs before each epoch's checkpoint
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {}
    seed_everything(0)
    with pytest.raises(KeyboardInterrupt):
        fit(build_model("smallcnn"), small, epochs=2, lr=3e-3, step_fn=step, progress=False, out=tmp_path / "b",
            model_spec=SPEC, log_fn=crash)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["epoch"] == 1
    resumed = build_model("smallcnn")
    fit(resumed, small, epochs=2, lr=3e-3, step_fn=step, progress=False, out=tmp_path / "b", model_spec=SPEC)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("method", ["sgt", "pact+sgt"])
def test_train_model_with_sgt_records_its_config(method, mnist_root, tmp_path):
    from qsal_lab.quant import QATConfig
    from qsal_lab.saliency import SGTConfig
    from qsal_lab.train import train_model

    quant = QATConfig(w_bits=4, a_bits=4, pact_alpha=6.0, alpha_l2=1e-3) if "pact" in method else None
    sgt = SGTConfig(fraction=0.4, lam=0.5)
    model, history = train_model("mnist", quant=quant, sgt=sgt, init_from="qsal_lab/pretrained/mnist_smallcnn",
                                 epochs=1, train_subset=512, test_subset=500, lr=5e-4, root=mnist_root,
                                 out=tmp_path, progress=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["sgt"] == {**sgt.to_dict(), "fraction": 0.4, "lam": 0.5}
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["config"]["sgt"] == sgt.to_dict()
    assert history.final["test_accuracy"] > 0.95  # fine-tuned from the 99.5 % float model
    if quant is not None:
        assert metrics["config"]["quant"]["alpha_l2"] == 1e-3 and history.final["alphas"]
    loaded, _ = load_checkpoint(tmp_path)  # an SGT model is an ordinary model of its architecture
    assert type(loaded) is type(model)


def test_train_model_refuses_what_is_not_an_sgt_config(mnist_root):
    from qsal_lab.train import train_model

    with pytest.raises(TypeError, match="sgt must be an SGTConfig"):
        train_model("mnist", sgt={"fraction": 0.5}, epochs=1, train_subset=100, root=mnist_root)


# ----------------------------------------------------------------------------- class imbalance, ResNet-18 width

def test_class_weighted_loss_by_hand():
    from qsal_lab.train import class_weighted_loss

    labels = torch.tensor([0, 1, 1, 1])  # weights N / (K n_c): 4 / (2 * 1) = 2 and 4 / (2 * 3) = 2/3
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    model = lambda x: x  # noqa: E731  the "model" returns its input as logits
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=torch.tensor([2.0, 2 / 3]))
    assert class_weighted_loss(labels)(model, logits, labels).item() == pytest.approx(expected.item())
    assert class_weighted_loss(torch.tensor([1, 1]), num_classes=3)(model, torch.zeros(2, 3), torch.tensor([1, 1])) > 0
    multi = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])  # pos_weight 2/2 = 1 and 3/1 = 3
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.zeros(4, 2), multi,
                                                                    pos_weight=torch.tensor([1.0, 3.0]))
    assert class_weighted_loss(multi)(model, torch.zeros(4, 2), multi).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("imbalance", ["weighted_loss", "sampler"])
def test_train_model_handles_imbalance_and_width(imbalance, data_root, tmp_path):
    from qsal_lab.train import train_model

    if not (data_root / "medmnist" / "pneumoniamnist.npz").exists():
        pytest.skip("no PneumoniaMNIST")
    model, history = train_model("pneumoniamnist", "resnet18", budget="ci", width=0.25, imbalance=imbalance,
                                 augment="shift", epochs=1, train_subset=128, test_subset=64, out=tmp_path,
                                 progress=False)
    loaded, ckpt = load_checkpoint(tmp_path)
    assert ckpt["model_spec"]["width"] == 0.25 and loaded.conv1.out_channels == 16
    assert ckpt["config"]["imbalance"] == imbalance and ckpt["config"]["recipe"]["augment"] == "shift"
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))


def test_train_model_rejects_bad_imbalance_options(tmp_path):
    from qsal_lab.saliency import SGTConfig
    from qsal_lab.train import train_model

    with pytest.raises(ValueError, match="unknown imbalance handling 'oversample'; choose one of: none, weighted_loss"):
        train_model("pneumoniamnist", "resnet18", imbalance="oversample")
    with pytest.raises(ValueError, match="does not reach saliency-guided training's own cross-entropy; use imbalance='sampler'"):
        train_model("pneumoniamnist", "resnet18", imbalance="weighted_loss", sgt=SGTConfig())


# ----------------------------------------------------------------------------- the data a run actually loaded

@pytest.fixture
def small_standin(monkeypatch):
    """The stand-in at 600 training images (not 20 000), for the duration of a test."""
    from qsal_lab import data, standin

    monkeypatch.setattr(standin, "STANDIN_SIZES", {"train": 600, "test": 300})
    standin._memoised.cache_clear()
    yield data.dataset_info("cifar10-standin")
    standin._memoised.cache_clear()


def test_a_standin_run_says_so_in_every_artefact(small_standin, tmp_path, monkeypatch, capsys):
    """QSAL_STANDIN=1 qsal train --dataset cifar10 ...: metrics, spec, qsal eval, ONNX export and the Pi bundle all
    name the stand-in (key and version), not CIFAR-10."""
    from qsal_lab.cli import main
    from qsal_lab.edge.deploy import build_bundle
    from qsal_lab.quant import OnnxClassifier

    monkeypatch.setenv("QSAL_STANDIN", "1")
    info, out = small_standin, tmp_path / "c"
    with pytest.warns(UserWarning, match="STAND-IN"):
        assert main(["train", "--dataset", "cifar10", "--model", "resnet20", "--budget", "ci", "--train-subset", "200",
                     "--test-subset", "100", "--out", str(out)]) in (0, None)
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert config["dataset"] == info.name == "cifar10-standin-v3" and config["dataset_name"] == info.display_name
    assert config["standin"] and config["dataset_version"] == "v3" and config["dataset_requested"] == "cifar10"
    _, ckpt = load_checkpoint(out)
    assert ckpt["model_spec"]["dataset"] == info.name and ckpt["model_spec"]["dataset_name"] == info.display_name
    capsys.readouterr()
    monkeypatch.delenv("QSAL_STANDIN")  # the checkpoint alone says which data it needs
    with pytest.warns(UserWarning, match="STAND-IN"):
        main(["eval", "--checkpoint", str(out), "--json", "--subset", "100"])
    shown = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert shown["dataset"] == info.display_name and shown["dataset_key"] == info.name and shown["standin"]
    main(["export", "--checkpoint", str(out), "--out", str(tmp_path / "c.onnx")])  # reads no data
    assert OnnxClassifier(tmp_path / "c.onnx").metadata["dataset"] == info.name
    with pytest.warns(UserWarning, match="STAND-IN"):
        bundle = build_bundle(out, tmp_path / "bundle", calib=32, samples=2)
    assert json.loads((bundle / "labels.json").read_text())["dataset"] == info.display_name
    assert OnnxClassifier(bundle / "model_int8.onnx").metadata["dataset_display_name"] == info.display_name


def test_a_real_cifar10_run_is_named_cifar10(tmp_path, monkeypatch):
    """The real-data path on a fixture in CIFAR-10's on-disk format (tests/fixtures/cifar10.py): never data."""
    from tests.fixtures.cifar10 import synthetic_cifar10

    from qsal_lab.train import train_model

    monkeypatch.delenv("QSAL_STANDIN", raising=False)
    root = synthetic_cifar10(monkeypatch, tmp_path / "data")
    model, history = train_model("cifar10", "resnet20", budget="ci", root=str(root), out=tmp_path / "run",
                                 holdout=50, progress=False)
    config = json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]
    assert config["dataset"] == "cifar10" and config["dataset_name"] == "CIFAR-10" and not config["standin"]
    assert config["train_size"] == 200 and config["holdout"] == 50 and config["recipe"]["schedule"] == "onecycle"
    assert load_checkpoint(tmp_path / "run")[1]["model_spec"]["dataset"] == "cifar10"


def test_cosine_schedule_decays_from_the_peak(tiny):
    model = build_model("smallcnn")
    history = fit(model, *tiny, epochs=2, lr=1e-3, progress=False, schedule="cosine", batch_size=64)
    assert history["lr"][-1] < 1e-6 and history["lr"][0] == pytest.approx(5e-4, rel=0.05)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        fit(build_model("smallcnn"), *tiny, epochs=1, lr=1e-3, progress=False, schedule="step")
