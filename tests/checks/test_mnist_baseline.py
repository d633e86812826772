import pytest
import torch.nn.functional as F

from qsal_lab.checks import CheckFailed
from qsal_lab.checks.mnist_baseline import check_accuracy, check_train_step, check_training_run


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


@pytest.mark.parametrize("bad, message", [
    (lambda logits, labels: 100 * (logits.argmax(1) == labels).float().mean().item(),
     r"returned 100 for a batch with every row right; expected 1\. It looks like a percentage: return a fraction"),
    (lambda logits, labels: (logits.argmax(1) == labels).mean(),
     r"accuracy\(\) raised RuntimeError: .*Bool\. .*convert it with \.float\(\) before \.mean\(\)"),
    (lambda logits, labels: (logits.argmax(dim=0) == labels).float().mean(),
     r"accuracy\(\) raised RuntimeError: .*must match the size.*argmax over the classes, logits\.argmax\(dim=1\)"),

    # a softmax over the batch changes which class is largest in some rows: the hint names the softmax,
    # not the argmax the learner already takes over dim=1
    (lambda logits, labels: (logits.softmax(dim=0).argmax(dim=1) == labels).float().mean(),
     r"returned 0\.6887 on 257 rows of which 200 are right; expected 0\.7782\. That is what a softmax over dim=0 "
     r"gives: .*Use softmax\(dim=1\), or no softmax at all"),
    (lambda logits, labels: (F.log_softmax(logits, dim=0).argmax(1) == labels).float().mean().item(),
     r"That is what a softmax over dim=0 gives"),
])
def test_check_accuracy_names_common_mistakes(bad, message):
    with pytest.raises(CheckFailed, match=message):
        check_accuracy(bad)


def test_check_train_step_zero_grad_between_backward_and_step():
    def zero_grad_too_late(model, x, y, optimizer):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.zero_grad()
        optimizer.step()
        return loss.item()
    with pytest.raises(CheckFailed, match=r"gradients were empty when optimizer\.step\(\) ran\. The order is "
                                          r"optimizer\.zero_grad\(\) -> loss\.backward\(\) -> optimizer\.step\(\)"):
        check_train_step(zero_grad_too_late)


def test_check_training_run_checks_accuracy_before_training():
    def must_not_train(model, x, y, optimizer):
        raise AssertionError("the training loop ran before accuracy() was checked")
    # no datasets needed: the unfinished accuracy is reported before anything is built or trained
    with pytest.raises(CheckFailed, match=r"accuracy\(\) returned None"):
        check_training_run(must_not_train, lambda logits, labels: None, None, None)
    # check_accuracy's cases run first (quietly), so its message names the mistake
    with pytest.raises(CheckFailed, match=r"accuracy\(\) returned 4 for a batch with every row right; expected 1\. "
                                          r"It looks like a count"):
        check_training_run(must_not_train, lambda logits, labels: (logits.argmax(1) == labels).sum(), None, None)


def test_check_accuracy_softmax_over_the_classes_passes(capsys):
    check_accuracy(lambda logits, labels: (logits.softmax(dim=1).argmax(dim=1) == labels).float().mean())
    assert "✅ check_accuracy passed" in capsys.readouterr().out


def test_check_accuracy_flat_argmax_keeps_the_argmax_hint():
    # no softmax involved: the hint must not blame one
    with pytest.raises(CheckFailed) as e:
        check_accuracy(lambda logits, labels: (logits.argmax() == labels).float().mean())
    assert "softmax" not in str(e.value) and "logits.argmax(dim=1)" in str(e.value)


def test_check_training_run_passes_and_returns_nothing(mnist_root, capsys):
    # a notebook cell shows a returned value below the pass message; the pass message already has the accuracy
    from qsal_lab.data import load_dataset

    train_ds = load_dataset("mnist", "train", subset=512, seed=0)
    test_ds = load_dataset("mnist", "test", subset=256, seed=0)
    assert check_training_run(good_step, good_accuracy, train_ds, test_ds, epochs=1, min_accuracy=0.0) is None
    assert "✅ check_training_run passed: your loop trained SmallCNN to" in capsys.readouterr().out
