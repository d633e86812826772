"""Exercise 8 (CIFAR-10, ResNet-20): symmetric weight quantization per tensor or per channel, the error layer
by layer, and the quantized copy of the network."""
from . import Exercise, code, edit, solution_object

CHECKS = "cifar"
NOTEBOOK = "08_cifar10_resnet20.ipynb"

QUANTIZE = code("""
def quantize_weight(w, bits, per_channel):
    qmax = 2 ** (bits - 1) - 1
    if per_channel:
        top = w.flatten(1).abs().amax(dim=1).view(-1, *[1] * (w.dim() - 1))
    else:
        top = w.abs().max()
    scale = top.clamp_min(1e-12) / qmax
    return torch.round(w / scale) * scale
""")

ERRORS = code("""
def layer_errors(model, bits, quantize):
    errors = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            w = module.weight.detach()
            errors[name] = tuple(float(((quantize(w, bits, pc) - w) ** 2).sum() / (w ** 2).sum())
                                 for pc in (False, True))
    return errors
""")

COPY = code("""
def quantize_weights(model, bits, per_channel, quantize):
    q = copy.deepcopy(model)
    layers = [name for name, m in q.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for name in layers:
            m = q.get_submodule(name)
            m.weight.copy_(quantize(m.weight, 8 if name in (layers[0], layers[-1]) else bits, per_channel))
    return q
""")


def layer_errors_on(fn, folded_resnet20):
    from qsal_lab.checks.cifar import check_layer_errors

    return check_layer_errors(fn, folded_resnet20, bits=4)


def quantize_weights_on(fn, folded_resnet20, cifar_like_loader):
    from qsal_lab.checks.cifar import check_quantize_weights

    return check_quantize_weights(fn, folded_resnet20, cifar_like_loader, bits=4)


def quantize_weights_with(fn, folded_resnet20, cifar_like_loader):
    from qsal_lab.checks.cifar import check_quantize_weights

    copy_fn = solution_object(NOTEBOOK, "quantize_weights")
    return check_quantize_weights(copy_fn, folded_resnet20, cifar_like_loader, bits=4, quantize=fn)


EXERCISES = [
    Exercise(
        8, NOTEBOOK, "quantize_weight", "check_quantize_weight", prose="symmetric narrow-range weights, per tensor or channel",
        downstream="check_quantize_weights", fixtures=("folded_resnet20", "cifar_like_loader"),
        run_downstream=quantize_weights_with,
        mistakes={
            "one scale even per channel": (edit(QUANTIZE, ("    if per_channel:", "    if False:")), ("every channel got the same scale",)),
            "a scale per channel even per tensor": (edit(QUANTIZE, ("    if per_channel:", "    if True:")), ("ONE scale for the whole tensor",)),
            "a scale per input channel": (
                edit(QUANTIZE, ("w.flatten(1).abs().amax(dim=1).view(-1, *[1] * (w.dim() - 1))",
                                "w.abs().amax(dim=[0] + list(range(2, w.dim())), keepdim=True)")),
                ("one per INPUT channel",)),
            "amax(dim=0)": (edit(QUANTIZE, ("w.flatten(1).abs().amax(dim=1).view(-1, *[1] * (w.dim() - 1))", "w.abs().amax(dim=0)")),
                            ("wrong axis", "over dim 0", "w.flatten(1).abs().amax(dim=1)")),
            "amax over the last dimension": (edit(QUANTIZE, ("w.flatten(1).abs().amax(dim=1).view(-1, *[1] * (w.dim() - 1))",
                                                             "w.abs().amax(dim=-1, keepdim=True)")),
                                             ("wrong axis", "over the last dimension")),
            "a (C,) scale not reshaped": (edit(QUANTIZE, ("w.flatten(1).abs().amax(dim=1).view(-1, *[1] * (w.dim() - 1))",
                                                          "w.flatten(1).abs().amax(dim=1)")),
                                          ("reshape it to (C, 1, 1, 1)",)),
            "2^k - 1 steps (unsigned)": (edit(QUANTIZE, ("qmax = 2 ** (bits - 1) - 1", "qmax = 2 ** bits - 1")),
                                         ("step of UNSIGNED codes",)),
            "2^(k-1) steps": (edit(QUANTIZE, ("qmax = 2 ** (bits - 1) - 1", "qmax = 2 ** (bits - 1)")),
                              ("divided max|w| by 2^(k-1)",)),
            "max(w), not max|w|": (edit(QUANTIZE, ("w.flatten(1).abs().amax(dim=1)", "w.flatten(1).amax(dim=1)"),
                                        ("top = w.abs().max()", "top = w.max()")),
                                   ("comes from max(w)",)),
            "the min-max range halved": (
                edit(QUANTIZE, ("w.flatten(1).abs().amax(dim=1).view", "((w.flatten(1).amax(dim=1) - w.flatten(1).amin(dim=1)) / 2).view"),
                     ("top = w.abs().max()", "top = (w.max() - w.min()) / 2")),
                ("asymmetric min-max recipe",)),
            "floor": (edit(QUANTIZE, ("torch.round", "torch.floor")), ("rounded down (floor)",)),
            "the integer codes": (edit(QUANTIZE, ("torch.round(w / scale) * scale", "torch.round(w / scale)")),
                                  ("integer code",)),
            "w divided in place": (edit(QUANTIZE, ("torch.round(w / scale) * scale", "w.div_(scale).round_().mul_(scale)")),
                                   ("changed w in place",)),
        },
        correct={
            "a loop over the output channels, with a clamp": code("""
                def quantize_weight(w, bits, per_channel):
                    qmax = 2 ** (bits - 1) - 1
                    if not per_channel:
                        s = w.abs().max() / qmax
                        return (w / s).round().clamp(-qmax, qmax) * s
                    return torch.stack([(c / (c.abs().max() / qmax)).round() * (c.abs().max() / qmax) for c in w])
            """),
            "numpy, float64": code("""
                def quantize_weight(w, bits, per_channel):
                    v = w.detach().double().numpy()
                    axes = tuple(range(1, v.ndim)) if per_channel else None
                    scale = np.abs(v).max(axis=axes, keepdims=per_channel) / (2 ** (bits - 1) - 1)
                    return torch.from_numpy(np.rint(v / scale) * scale)
            """),
            "amax over a tuple of dims with keepdim": code("""
                def quantize_weight(w, bits, per_channel):
                    dims = tuple(range(1, w.dim())) if per_channel else tuple(range(w.dim()))
                    scale = w.abs().amax(dim=dims, keepdim=True) / (2 ** (bits - 1) - 1)
                    return torch.round(w / scale) * scale
            """),
        }),
    Exercise(
        8, NOTEBOOK, "layer_errors", "check_layer_errors", prose="relative squared error per layer, per tensor and per channel",
        fixtures=("folded_resnet20",), run=layer_errors_on,
        mistakes={
            "the pair swapped": (edit(ERRORS, ("for pc in (False, True)", "for pc in (True, False)")), ("(per-channel, per-tensor)",)),
            "the mean squared error": (edit(ERRORS, ("((quantize(w, bits, pc) - w) ** 2).sum() / (w ** 2).sum()",
                                                     "((quantize(w, bits, pc) - w) ** 2).mean()")),
                                       ("mean squared error itself",)),
            "the summed squared error": (edit(ERRORS, (" / (w ** 2).sum()", "")), ("summed squared error",)),
            "the norm ratio": (edit(ERRORS, ("((quantize(w, bits, pc) - w) ** 2).sum() / (w ** 2).sum()",
                                             "(quantize(w, bits, pc) - w).norm() / w.norm()")),
                               ("square root",)),
            "absolute errors": (edit(ERRORS, ("((quantize(w, bits, pc) - w) ** 2).sum() / (w ** 2).sum()",
                                              "(quantize(w, bits, pc) - w).abs().mean() / w.abs().mean()")),
                                ("ABSOLUTE error",)),
            "divided by the quantized weights' energy": (edit(ERRORS, ("/ (w ** 2).sum()", "/ (quantize(w, bits, pc) ** 2).sum()")),
                                                         ("quantized weights' energy",)),
            "the Linear layer left out": (edit(ERRORS, ("(nn.Conv2d, nn.Linear)", "nn.Conv2d")), ("misses 1 of", "nn.Linear")),
            "the quantized weight written back": (
                edit(ERRORS, ("            w = module.weight.detach()\n",
                              "            w = module.weight.detach().clone()\n"
                              "            module.weight.data = quantize(w, bits, True)\n")),
                ("changed the model's weights",)),
            "modules as keys": (edit(ERRORS, ("errors[name] =", "errors[module] =")), ("keys must be the layers' names",)),
        },
        correct={
            "float64, every module with a 4-D or 2-D weight": code("""
                def layer_errors(model, bits, quantize):
                    out = {}
                    for name, m in model.named_modules():
                        if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() in (2, 4):
                            w = m.weight.detach()
                            pair = []
                            for pc in (False, True):
                                d = (quantize(w, bits, pc) - w).double()
                                pair.append((d * d).sum().item() / (w.double() ** 2).sum().item())
                            out[name] = pair
                    return out
            """),
            "numpy, a dict comprehension": code("""
                def layer_errors(model, bits, quantize):
                    def err(w, pc):
                        w = w.detach()
                        q = quantize(w, bits, pc).numpy()
                        return float(np.sum((q - w.numpy()) ** 2) / np.sum(w.numpy() ** 2))
                    return {n: (err(m.weight, False), err(m.weight, True)) for n, m in model.named_modules()
                            if type(m) in (nn.Conv2d, nn.Linear)}
            """),
        }),
    Exercise(
        8, NOTEBOOK, "quantize_weights", "check_quantize_weights", prose="a quantized copy, first and last layer at 8 bits",
        fixtures=("folded_resnet20", "cifar_like_loader"), run=quantize_weights_on,
        mistakes={
            "the model itself changed (no copy)": (edit(COPY, ("q = copy.deepcopy(model)", "q = model")), ("changed the model it was given",)),
            "first and last at `bits` too": (edit(COPY, ("8 if name in (layers[0], layers[-1]) else bits", "bits")),
                                             ("keeps 8-bit weights",)),
            "every layer at 8 bits": (edit(COPY, ("8 if name in (layers[0], layers[-1]) else bits", "8")),
                                      ("only the first and the last layer keep 8 bits",)),
            "only the first at 8 bits": (edit(COPY, ("(layers[0], layers[-1])", "(layers[0],)")), ("last weight layer",)),
            "per_channel always True": (edit(COPY, ("else bits, per_channel)", "else bits, True)")), ("opposite per_channel",)),
            "nothing assigned": (edit(COPY, ("            m.weight.copy_(", "            (")), ("float one", "copy_")),
            "a tensor assigned to the Parameter": (
                edit(COPY, ("    with torch.no_grad():\n", "    if True:\n"),
                     ("m.weight.copy_(quantize(m.weight, 8 if name in (layers[0], layers[-1]) else bits, per_channel))",
                      "m.weight = quantize(m.weight.detach(), 8 if name in (layers[0], layers[-1]) else bits, per_channel)")),
                ("nn.Parameter", "copy_")),
            "the state dict returned": (edit(COPY, ("    return q", "    return q.state_dict()")), ("return the quantized model",)),
        },
        correct={
            "weight.data assigned, modules listed": code("""
                def quantize_weights(model, bits, per_channel, quantize):
                    q = copy.deepcopy(model)
                    layers = [m for m in q.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
                    for i, m in enumerate(layers):
                        k = 8 if i in (0, len(layers) - 1) else bits
                        m.weight.data = quantize(m.weight.data, k, per_channel)
                    return q
            """),
            "a new state dict loaded into the copy": code("""
                def quantize_weights(model, bits, per_channel, quantize):
                    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
                    state = {k: v.clone() for k, v in model.state_dict().items()}
                    for n in names:
                        k = 8 if n in (names[0], names[-1]) else bits
                        state[n + ".weight"] = quantize(state[n + ".weight"], k, per_channel)
                    q = copy.deepcopy(model)
                    q.load_state_dict(state)
                    return q
            """),
        }),
]
