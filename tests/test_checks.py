import pytest
import torch
import torch.nn.functional as F

from qsal_lab.checks import CheckFailed, check_accuracy, check_train_step


def good_accuracy(logits, labels):
    return (logits.argmax(1) == labels).float().mean().item()


def test_check_accuracy_both_directions(capsys):
    check_accuracy(good_accuracy)
    assert "✅ check_accuracy passed" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="accuracy\\(\\) returned None: fill in its TODO"):
        check_accuracy(lambda logits, labels: None)
    with pytest.raises(CheckFailed, match="looks like a count"):
        check_accuracy(lambda logits, labels: (logits.argmax(1) == labels).sum().item())
    with pytest.raises(CheckFailed, match=r"Compare logits.argmax\(dim=1\)"):
        check_accuracy(lambda logits, labels: (logits.argmax() == labels).float().mean())  # no dim: flat argmax
    with pytest.raises(CheckFailed, match="shape"):
        check_accuracy(lambda logits, labels: (logits.argmax(1) == labels).float())  # forgot the mean

    def todo(logits, labels):
        raise NotImplementedError
    with pytest.raises(CheckFailed, match="not implemented yet"):
        check_accuracy(todo)


def good_step(model, x, y, optimizer):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def test_check_train_step_both_directions(capsys):
    check_train_step(good_step)
    assert "✅ check_train_step passed" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match="returned None"):
        check_train_step(lambda model, x, y, optimizer: None)

    def no_zero_grad(model, x, y, optimizer):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()
    with pytest.raises(CheckFailed, match="zero_grad"):
        check_train_step(no_zero_grad)

    def no_step(model, x, y, optimizer):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss.item()
    with pytest.raises(CheckFailed, match="did not change the model's parameters"):
        check_train_step(no_step)

    def loss_after_update(model, x, y, optimizer):
        good_step(model, x, y, optimizer)
        return F.cross_entropy(model(x), y).item()
    with pytest.raises(CheckFailed, match="before the update"):
        check_train_step(loss_after_update)
