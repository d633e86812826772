"""Exercise 4 (PACT): the forward pass and the autograd Function with its straight-through backward."""
from . import Exercise, code, edit

CHECKS = "pact"
NOTEBOOK = "04_pact_qat.ipynb"

FORWARD = code("""
def pact_forward(x, alpha, bits):
    levels = 2**bits - 1
    y = x.clamp(0.0, alpha)
    return torch.round(y * levels / alpha) * alpha / levels
""")

FUNCTION = code("""
class PACTFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, bits):
        ctx.save_for_backward(x, alpha)
        return pact_forward(x, alpha.item(), bits)

    @staticmethod
    def backward(ctx, grad):
        x, alpha = ctx.saved_tensors
        grad_x = grad * ((x >= 0) & (x < alpha))
        grad_alpha = (grad * (x >= alpha)).sum()
        return grad_x, grad_alpha, None
""")

def qat(fn, mnist_tiny):
    from qsal_lab.checks.pact import check_pact_qat

    return check_pact_qat(fn, *mnist_tiny, bits=2, steps=4, min_accuracy=0.5)


EXERCISES = [
    Exercise(
        4, NOTEBOOK, "pact_forward", "check_pact_forward", prose="clip to [0, alpha], round to 2^k levels",
        mistakes={
            "no clipping": (edit(FORWARD, ("x.clamp(0.0, alpha)", "x")), ("forgot to clip",)),
            "ReLU only, no clip at alpha": (edit(FORWARD, ("x.clamp(0.0, alpha)", "torch.relu(x)")), ("not clipped at alpha",)),
            "no clip at 0": (edit(FORWARD, ("x.clamp(0.0, alpha)", "x.clamp(max=alpha)")), ("negative inputs must give 0",)),
            "2^k steps": (edit(FORWARD, ("2**bits - 1", "2**bits")), ("2^k - 1",)),
            "2^k + 1 steps": (edit(FORWARD, ("2**bits - 1", "2**bits + 1")), ("2^k + 1 steps",)),
            "clipped, not rounded": (edit(FORWARD, ("torch.round(y * levels / alpha) * alpha / levels", "y")),
                                     ("not quantized",)),
            "the integer code, not scaled back": (edit(FORWARD, (" * alpha / levels", "")), ("integer code", "multiply it back")),
            "floor": (edit(FORWARD, ("torch.round", "torch.floor")), ("rounded down (floor)",)),
        },
        correct={
            "torch.where and a step": code("""
                def pact_forward(x, alpha, bits):
                    step = alpha / (2**bits - 1)
                    y = torch.where(x < 0, torch.zeros_like(x), torch.where(x > alpha, torch.full_like(x, alpha), x))
                    return (y / step).round() * step
            """),
            "numpy, float64": code("""
                def pact_forward(x, alpha, bits):
                    n = 2**bits - 1
                    y = np.clip(x.double().numpy(), 0, alpha)
                    return torch.from_numpy(np.rint(y * n / alpha) * alpha / n)
            """),
            "a loop with Python's round": code("""
                def pact_forward(x, alpha, bits):
                    n = 2**bits - 1
                    out = [round(min(max(v, 0.0), alpha) * n / alpha) * alpha / n for v in x.flatten().tolist()]
                    return torch.tensor(out).view(x.shape)
            """),
        }),
    Exercise(
        4, NOTEBOOK, "PACTFunction", "check_pact_function", needs=("pact_forward",), kind="class",
        downstream="check_pact_qat", fixtures=("mnist_tiny",), run_downstream=qat,
        prose="forward with pact_forward; the straight-through backward for x and alpha",
        mistakes={
            "the gradient passed everywhere": (edit(FUNCTION, ("grad * ((x >= 0) & (x < alpha))", "grad")),
                                               ("passed the gradient everywhere",)),
            "not zeroed below 0": (edit(FUNCTION, ("grad * ((x >= 0) & (x < alpha))", "grad * (x < alpha)")),
                                   ("where x < 0 too",)),
            "not zeroed above alpha": (edit(FUNCTION, ("grad * ((x >= 0) & (x < alpha))", "grad * (x >= 0)")),
                                       ("zero the gradient where x >= alpha",)),
            "x == alpha counted as inside": (edit(FUNCTION, ("(x < alpha))", "(x <= alpha))")), ("use x < alpha",)),
            "x == 0 left out": (edit(FUNCTION, ("(x >= 0) & (x < alpha)", "(x > 0) & (x < alpha)")), ("x == 0 exactly",)),
            "alpha's gradient per element": (edit(FUNCTION, ("(grad * (x >= alpha)).sum()", "grad * (x >= alpha)")),
                                             ("one value per element of x", "sum over them")),
            "alpha's gradient as a float": (edit(FUNCTION, ("(grad * (x >= alpha)).sum()", "(grad * (x >= alpha)).sum().item()")),
                                            ("must be a tensor", "without .item()")),
            "0 for bits instead of None": (edit(FUNCTION, ("return grad_x, grad_alpha, None", "return grad_x, grad_alpha, 0")),
                                           ("return None in its place",)),
            "alpha's gradient with the wrong sign": (edit(FUNCTION, ("(grad * (x >= alpha)).sum()", "-(grad * (x >= alpha)).sum()")),
                                                     ("sign is flipped",)),
            "alpha's mask x > alpha": (edit(FUNCTION, ("(grad * (x >= alpha))", "(grad * (x > alpha))")),
                                       ("include x == alpha",)),
            "alpha's mask inverted": (edit(FUNCTION, ("(grad * (x >= alpha))", "(grad * (x < alpha))")), ("mask is inverted",)),
            "the gradient edited in place": (
                edit(FUNCTION, ("        grad_x = grad * ((x >= 0) & (x < alpha))\n",
                                "        grad_x = grad\n        grad_x[(x < 0) | (x >= alpha)] = 0\n")),
                ("changed grad in place",)),
            "two gradients returned": (edit(FUNCTION, ("return grad_x, grad_alpha, None", "return grad_x, grad_alpha")),
                                       ("one gradient per input",)),
        },
        correct={
            "torch.where, a clone for bits": code("""
                class PACTFunction(torch.autograd.Function):
                    @staticmethod
                    def forward(ctx, x, alpha, bits):
                        ctx.save_for_backward(x, alpha)
                        return pact_forward(x, alpha.item(), bits)

                    @staticmethod
                    def backward(ctx, grad):
                        x, alpha = ctx.saved_tensors
                        inside = (x >= 0) & (x < alpha)
                        grad_x = torch.where(inside, grad, torch.zeros_like(grad))
                        grad_alpha = torch.where(x >= alpha, grad, torch.zeros_like(grad)).sum().reshape(alpha.shape)
                        return grad_x, grad_alpha, None
            """),
            "a copy zeroed in place, float masks": code("""
                class PACTFunction(torch.autograd.Function):
                    @staticmethod
                    def forward(ctx, x, alpha, bits):
                        ctx.save_for_backward(x, alpha)
                        return pact_forward(x, alpha.item(), bits)

                    @staticmethod
                    def backward(ctx, grad):
                        x, alpha = ctx.saved_tensors
                        grad_x = grad.clone()
                        grad_x[(x < 0) | (x >= alpha)] = 0
                        grad_alpha = torch.sum(grad * (x >= alpha).float())
                        return grad_x, grad_alpha, None
            """),
        }),
]
