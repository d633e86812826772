import pytest

from qsal_lab.budget import current_budget, pick, recipe


def test_budget_from_env_and_argument(monkeypatch):
    monkeypatch.delenv("QSAL_BUDGET", raising=False)
    assert current_budget() == "book"
    monkeypatch.setenv("QSAL_BUDGET", "ci")
    assert current_budget() == "ci" and pick(ci=1, book=2, full=3) == 1
    assert current_budget("full") == "full" and pick(1, 2, 3, budget="book") == 2


def test_bad_budget_is_explained(monkeypatch):
    monkeypatch.setenv("QSAL_BUDGET", "huge")
    with pytest.raises(ValueError, match="unknown budget 'huge'; choose one of: ci, book, full"):
        current_budget()


def test_recipes():
    assert recipe("smallcnn", "book").train_subset is None  # the book trains on all of MNIST
    assert recipe("smallcnn", "ci").train_subset <= 5000
    assert recipe("smallcnn", "ci", epochs=5).epochs == 5
    assert recipe("resnet20", "full").epochs == 200 and recipe("resnet20", "full").schedule == "cosine"
    with pytest.raises(ValueError, match="no recipe for model 'vgg'"):
        recipe("vgg")
