"""Exercise 1 (MNIST baseline): accuracy and one training step."""
from . import Exercise, code, edit, solution_object

CHECKS = "mnist_baseline"
NOTEBOOK = "01_mnist_baseline.ipynb"

ACCURACY = code("""
def accuracy(logits, labels):
    return (logits.argmax(dim=1) == labels).float().mean().item()
""")

TRAIN_STEP = code("""
def train_step(model, x, y, optimizer):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()
""")

def training_run(accuracy=None, train_step=None, mnist_tiny=None):
    from qsal_lab.checks.mnist_baseline import check_training_run

    accuracy = accuracy or solution_object(NOTEBOOK, "accuracy")
    train_step = train_step or solution_object(NOTEBOOK, "train_step")
    return check_training_run(train_step, accuracy, *mnist_tiny, epochs=1, min_accuracy=0.5)


EXERCISES = [
    Exercise(
        1, NOTEBOOK, "accuracy", "check_accuracy", prose="the share of rows whose largest logit is the label",
        downstream="check_training_run", fixtures=("mnist_tiny",),
        run_downstream=lambda fn, mnist_tiny: training_run(accuracy=fn, mnist_tiny=mnist_tiny),
        mistakes={
            "a count, not a fraction": (edit(ACCURACY, (".float().mean()", ".sum()")), ("looks like a count", "divide")),
            "a percentage": (edit(ACCURACY, (".item()", ".item() * 100")), ("percentage", "fraction")),
            "argmax over the batch (dim=0)": (edit(ACCURACY, ("dim=1", "dim=0")), ("argmax over the classes", "dim=1")),
            "softmax over dim=0 before the argmax": (
                edit(ACCURACY, ("logits.argmax(dim=1)", "logits.softmax(dim=0).argmax(dim=1)")), ("softmax over dim=0",)),
            "the mean of a bool tensor": (edit(ACCURACY, (".float().mean()", ".mean()")), ("bool tensor", ".float()")),
            "no mean: one match per row": (edit(ACCURACY, (".float().mean().item()", ".float()")),
                                           ("tensor of shape (4,)", "one number")),
            "the largest logit's value, not its position": (
                edit(ACCURACY, ("logits.argmax(dim=1)", "logits.max(dim=1).values")), ("logits.argmax(dim=1)",)),
            "argmin for argmax": (edit(ACCURACY, ("argmax", "argmin")), ("logits.argmax(dim=1)",)),
        },
        correct={
            "a Python loop over the rows": code("""
                def accuracy(logits, labels):
                    right = 0
                    for row, label in zip(logits.tolist(), labels.tolist()):
                        right += row.index(max(row)) == label
                    return right / len(labels)
            """),
            "numpy": code("""
                def accuracy(logits, labels):
                    return float(np.mean(np.argmax(logits.numpy(), axis=1) == labels.numpy()))
            """),
            "a 0-d tensor, from an integer count": code("""
                def accuracy(logits, labels):
                    return logits.argmax(1).eq(labels).sum() / labels.numel()
            """),
            "float64": code("""
                def accuracy(logits, labels):
                    return (logits.double().argmax(dim=1) == labels).double().mean()
            """),
        }),
    Exercise(
        1, NOTEBOOK, "train_step", "check_train_step", prose="zero the gradients, forward, loss, backward, step",
        downstream="check_training_run", fixtures=("mnist_tiny",),
        run_downstream=lambda fn, mnist_tiny: training_run(train_step=fn, mnist_tiny=mnist_tiny),
        mistakes={
            "no zero_grad: gradients pile up": (edit(TRAIN_STEP, ("    optimizer.zero_grad()\n", "")),
                                                ("zero_grad() before loss.backward()",)),
            "zero_grad between backward and step": (
                edit(TRAIN_STEP, ("    optimizer.zero_grad()\n", ""), ("    optimizer.step()", "    optimizer.zero_grad()\n    optimizer.step()")),
                ("gradients were empty", "never between backward() and step()")),
            "no optimizer.step()": (edit(TRAIN_STEP, ("    optimizer.step()\n", "")),
                                    ("did not change the model's parameters", "optimizer.step()")),
            "no backward()": (edit(TRAIN_STEP, ("    loss.backward()\n", "")), ("gradients were empty",)),
            "the loss after the update": (
                edit(TRAIN_STEP, ("    return loss.item()", "    return F.cross_entropy(model(x), y).item()")),
                ("before the update",)),
            "nll_loss on logits": (edit(TRAIN_STEP, ("F.cross_entropy", "F.nll_loss")), ("F.cross_entropy(model(x), y)",)),
            "softmax before cross_entropy": (edit(TRAIN_STEP, ("model(x), y", "model(x).softmax(dim=1), y")),
                                             ("F.cross_entropy(model(x), y)",)),
            "no return": (edit(TRAIN_STEP, ("    return loss.item()", "")), ("returned None",)),
        },
        correct={
            "model.zero_grad() and nn.CrossEntropyLoss": code("""
                def train_step(model, x, y, optimizer):
                    model.zero_grad()
                    loss = nn.CrossEntropyLoss()(model(x), y)
                    loss.backward()
                    optimizer.step()
                    return float(loss.detach())
            """),
            "the loss tensor itself, gradients zeroed to 0 (not None)": code("""
                def train_step(model, x, y, optimizer):
                    optimizer.zero_grad(set_to_none=False)
                    loss = F.cross_entropy(model(x), y, reduction="sum") / len(y)
                    loss.backward()
                    optimizer.step()
                    return loss
            """),
        }),
]
