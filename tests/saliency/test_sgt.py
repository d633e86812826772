"""Saliency-guided training: the loss by hand, fused = naive, pass modes, config errors, cost helper."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qsal_lab.quant import QATConfig, pact_alpha_l2, quantize_model
from qsal_lab.saliency.masking import mask_features
from qsal_lab.saliency.sgt import (SGTConfig, compare_steps, input_saliency, kl_to_masked, sgt_loss, sgt_step,
                                   train_step_seconds)


def small_net(seed=0):
    """BatchNorm and dropout: the layers whose mode matters."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Dropout(0.25), nn.Linear(6 * 16, 3))


g = torch.Generator().manual_seed(0)
X, Y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)


def test_sgt_loss_by_hand():
    logits, masked, y = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    p = [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)]
    ce = -math.log(p[0])
    kl = sum(pi * math.log(pi / 0.5) for pi in p)
    assert kl_to_masked(logits, masked).item() == pytest.approx(kl, rel=1e-6)
    assert sgt_loss(logits, masked, y, lam=1.0).item() == pytest.approx(ce + kl, rel=1e-6)
    assert sgt_loss(logits, masked, y, lam=0.3).item() == pytest.approx(ce + 0.3 * kl, rel=1e-6)
    two = torch.cat([logits, masked]), torch.cat([masked, masked]), torch.tensor([0, 1])
    assert sgt_loss(*two).item() == pytest.approx((ce + math.log(2) + kl) / 2, rel=1e-6)  # batch means


def test_detached_target_only_changes_the_gradient():
    logits = torch.tensor([[2.0, 0.0]], requires_grad=True)
    masked, y = torch.tensor([[0.0, 0.0]], requires_grad=True), torch.tensor([0])
    a, b = sgt_loss(logits, masked, y), sgt_loss(logits, masked, y, detach_target=True)
    assert a.item() == b.item()
    ga = torch.autograd.grad(a, logits)[0]
    gb = torch.autograd.grad(b, logits)[0]
    torch.testing.assert_close(gb, F.softmax(logits.detach(), 1) - torch.tensor([[1.0, 0.0]]))  # CE's only
    assert not torch.allclose(ga, gb)


@pytest.mark.parametrize("abs_", [True, False])
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("kind", ["float", "pact"])
def test_fused_and_naive_steps_choose_identical_masks_and_the_same_ce(abs_, detach, kind):
    model = small_net()
    if kind == "pact":
        quantize_model(model, QATConfig(w_bits=4, a_bits=4, pact_alpha=3.0))
    result = compare_steps(model, X, Y, SGTConfig(fraction=0.5, abs=abs_, detach_target=detach))
    assert result["same_mask"]
    assert result["ce_naive"] == result["ce_fused"]
    assert result["mask_fused"].flatten(1).sum(1).tolist() == [32] * 16


@pytest.mark.parametrize("detach", [True, False])
def test_both_steps_give_the_same_update(detach):
    """Same loss and the same weights afterwards: both differentiate CE + lam * KL."""
    results = {}
    for name in ("naive", "fused"):
        m = small_net()
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        torch.manual_seed(1)
        out = sgt_step(m.train(), X, Y, opt, SGTConfig(step=name, lam=0.7, detach_target=detach))
        results[name] = out.loss, [p.detach().clone() for p in m.parameters()]
    assert results["naive"][0] == pytest.approx(results["fused"][0], rel=1e-6)
    for a, b in zip(results["naive"][1], results["fused"][1]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_the_mask_is_the_least_salient_pixels_of_the_true_class():
    model, twin = small_net().train(), small_net().train()
    torch.manual_seed(2)
    out = sgt_step(model, X, Y, torch.optim.SGD(model.parameters(), lr=0.0), SGTConfig(fraction=0.3, step="naive"))
    torch.manual_seed(2)  # the same dropout masks as the step's clean pass
    saliency = input_saliency(twin, X, Y)  # d log p_y / dx; the step's -dCE/dx is the same up to 1/N
    _, expected = mask_features(X, saliency, 0.3)
    assert torch.equal(out.mask, expected)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_pass_modes(mode):
    """Both modes: clean and masked passes in train mode (BatchNorm counts 2 batches a step); the
    eval-mode saliency pass uses running statistics and no dropout, and leaves the model in train mode."""
    model = small_net().train()
    bn = model[1]
    reference = copy.deepcopy(model).eval()
    torch.manual_seed(4)
    out = sgt_step(model, X, Y, torch.optim.SGD(model.parameters(), lr=0.0),
                   SGTConfig(step="naive", saliency_mode=mode))
    assert model.training and bn.num_batches_tracked.item() == 2
    if mode == "eval":
        _, expected = mask_features(X, input_saliency(reference, X, Y), 0.5)
        assert torch.equal(out.mask, expected)


def test_extra_loss_is_added_and_pact_alphas_get_its_gradient():
    model = quantize_model(small_net(), QATConfig(w_bits=4, a_bits=4, pact_alpha=3.0)).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    torch.manual_seed(0)
    plain = sgt_step(copy.deepcopy(model), X, Y, opt, SGTConfig())
    torch.manual_seed(0)
    step = SGTConfig().train_step(extra_loss=lambda m: 0.01 * pact_alpha_l2(m))
    loss = step(model, X, Y, opt)
    assert loss == pytest.approx(plain.loss + 0.01 * 9.0, rel=1e-5)
    alpha = next(p for n, p in model.named_parameters() if n.endswith("alpha"))
    assert alpha.grad is not None


@pytest.mark.parametrize("kwargs, message", [
    ({"fraction": 0.0}, r"SGTConfig.fraction must be a number strictly between 0 and 1"),
    ({"fraction": 1.2}, r"SGTConfig.fraction must be a number strictly between 0 and 1"),
    ({"lam": -0.1}, r"SGTConfig.lam \(the KL weight\) must be a number >= 0"),
    ({"step": "fast"}, r"unknown SGT step 'fast'; choose one of: fused, naive"),
    ({"saliency_mode": "test"}, r"unknown saliency_mode 'test'; choose one of: train, eval"),
    ({"saliency_mode": "eval"}, r"use step='naive' for saliency_mode='eval'"),
])
def test_bad_config_is_refused_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        SGTConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_multi_label_targets_are_refused():
    model = small_net()
    with pytest.raises(ValueError, match="one integer class label per image"):
        sgt_step(model, X, torch.zeros(16, 3), torch.optim.SGD(model.parameters(), lr=0.1), SGTConfig())


def test_train_step_seconds_reports_all_three():
    r = train_step_seconds(small_net(), SGTConfig(), [(X, Y)], rounds=2)
    assert set(r) >= {"standard_s", "naive_s", "fused_s", "naive_ratio", "fused_ratio"}
    assert all(len(v) == 2 and min(v) > 0 for v in r["rounds"].values())
    with pytest.raises(ValueError, match="at least one"):
        train_step_seconds(small_net(), SGTConfig(), [])


def test_default_fraction_is_the_papers():
    from qsal_lab.saliency import default_fraction

    assert default_fraction("mnist") == 0.5 and default_fraction("MNIST") == 0.5
    assert default_fraction("cifar10") == 0.1 and default_fraction("cifar10-standin") == 0.1
    assert default_fraction("pneumoniamnist") == 0.5  # no paper value: the MNIST one
