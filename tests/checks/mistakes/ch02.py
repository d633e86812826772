"""Exercise 2 (quantization basics): quantize, dequantize and the min-max scale and zero point."""
from . import Exercise, code, edit, solution_object

CHECKS = "quant_basics"
NOTEBOOK = "02_quantization_basics.ipynb"

QUANTIZE = code("""
def quantize(x, scale, zero_point, qmin, qmax):
    q = torch.round(x / scale) + zero_point
    return q.clamp(qmin, qmax).to(torch.int64)
""")

DEQUANTIZE = code("""
def dequantize(q, scale, zero_point):
    return (q - zero_point) * scale
""")

QPARAMS = code("""
def qparams_minmax(x, bits):
    lo = min(x.min().item(), 0.0)
    hi = max(x.max().item(), 0.0)
    scale = (hi - lo) / (2**bits - 1)
    zero_point = int(round(-lo / scale))
    return scale, zero_point
""")

def roundtrip(**mine):
    import torch

    from qsal_lab.checks.quant_basics import check_quantization_roundtrip

    fns = {name: mine.get(name) or solution_object(NOTEBOOK, name) for name in ("quantize", "dequantize", "qparams_minmax")}
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 0.8 + 0.2
    return check_quantization_roundtrip(fns["quantize"], fns["dequantize"], fns["qparams_minmax"], x)


EXERCISES = [
    Exercise(
        2, NOTEBOOK, "quantize", "check_quantize",
        downstream="check_quantization_roundtrip", run_downstream=lambda fn: roundtrip(quantize=fn), prose="clamp(round(x / s) + z, qmin, qmax) as integer codes",
        mistakes={
            "no clamp": (edit(QUANTIZE, ("q.clamp(qmin, qmax)", "q")), ("outside [qmin, qmax]", "clamp")),
            "truncation (.long()) instead of rounding": (
                edit(QUANTIZE, ("torch.round(x / scale)", "(x / scale).long()")), ("truncates toward zero", "torch.round()")),
            "floor instead of round": (edit(QUANTIZE, ("torch.round", "torch.floor")), ("floor()",)),
            "zero point subtracted": (edit(QUANTIZE, ("+ zero_point", "- zero_point")), ("zero point has the wrong sign",)),
            "x times the scale": (edit(QUANTIZE, ("x / scale", "x * scale")), ("divide x by the scale",)),
            "clamp before adding the zero point": (
                edit(QUANTIZE, ("q = torch.round(x / scale) + zero_point\n    return q.clamp(qmin, qmax)",
                                "q = torch.round(x / scale).clamp(qmin, qmax) + zero_point\n    return q")),
                ("clamp after adding the zero point",)),
            "no rounding, float codes": (
                edit(QUANTIZE, ("torch.round(x / scale)", "x / scale"), (".to(torch.int64)", "")), ("not whole numbers",)),
            "int8 codes wrap around": (edit(QUANTIZE, ("torch.int64", "torch.int8")), ("wrapped around", "torch.int64")),
            "float codes": (edit(QUANTIZE, (".to(torch.int64)", "")), ("right codes but as torch.float32", "integers")),
        },
        correct={
            "a loop over Python floats": code("""
                def quantize(x, scale, zero_point, qmin, qmax):
                    codes = [min(max(round(v / scale) + zero_point, qmin), qmax) for v in x.flatten().tolist()]
                    return torch.tensor(codes, dtype=torch.int64).reshape(x.shape)
            """),
            "numpy, int32 codes": code("""
                def quantize(x, scale, zero_point, qmin, qmax):
                    q = np.clip(np.rint(x.numpy() / scale) + zero_point, qmin, qmax)
                    return torch.from_numpy(q.astype(np.int32))
            """),
            "round half up, float64": code("""
                def quantize(x, scale, zero_point, qmin, qmax):
                    return torch.clamp(torch.floor(x.double() / scale + 0.5) + zero_point, qmin, qmax).long()
            """),
        }),
    Exercise(
        2, NOTEBOOK, "dequantize", "check_dequantize",
        downstream="check_quantization_roundtrip", run_downstream=lambda fn: roundtrip(dequantize=fn), prose="(q - z) * s",
        mistakes={
            "zero point subtracted after scaling": (edit(DEQUANTIZE, ("(q - zero_point) * scale", "q * scale - zero_point")),
                                                    ("before multiplying",)),
            "zero point added": (edit(DEQUANTIZE, ("q - zero_point", "q + zero_point")), ("wrong sign",)),
            "divided by the scale": (edit(DEQUANTIZE, ("* scale", "/ scale")), ("multiply by the scale",)),
            "no zero point": (edit(DEQUANTIZE, ("(q - zero_point) * scale", "q * scale")), ("zero point is missing",)),
            "converted to integers": (edit(DEQUANTIZE, ("(q - zero_point) * scale", "((q - zero_point) * scale).long()")),
                                      ("drops the fraction",)),
            "rounded": (edit(DEQUANTIZE, ("(q - zero_point) * scale", "torch.round((q - zero_point) * scale)")),
                        ("rounded to whole numbers",)),
        },
        correct={
            "float() first": code("""
                def dequantize(q, scale, zero_point):
                    return scale * (q.float() - zero_point)
            """),
            "numpy, float64": code("""
                def dequantize(q, scale, zero_point):
                    return torch.from_numpy((q.numpy().astype(np.float64) - zero_point) * scale)
            """),
            "element by element": code("""
                def dequantize(q, scale, zero_point):
                    return torch.tensor([(v - zero_point) * scale for v in q.flatten().tolist()]).reshape(q.shape)
            """),
        }),
    Exercise(
        2, NOTEBOOK, "qparams_minmax", "check_qparams_minmax",
        downstream="check_quantization_roundtrip", run_downstream=lambda fn: roundtrip(qparams_minmax=fn), prose="scale and zero point of the widened min-max range",
        mistakes={
            "range not widened to include 0": (
                edit(QPARAMS, ("min(x.min().item(), 0.0)", "x.min().item()"), ("max(x.max().item(), 0.0)", "x.max().item()")),
                ("must contain 0",)),
            "2**bits steps": (edit(QPARAMS, ("(2**bits - 1)", "2**bits")), ("only", "steps", "2**bits - 1")),
            "the range, not divided into steps": (edit(QPARAMS, ("(hi - lo) / (2**bits - 1)", "(hi - lo)")),
                                                  ("divide the range", "number of steps")),
            "zero point truncated with int()": (edit(QPARAMS, ("int(round(-lo / scale))", "int(-lo / scale)")),
                                                ("truncated", "round()")),
            "zero point with the wrong sign": (edit(QPARAMS, ("int(round(-lo / scale))", "int(round(lo / scale))")),
                                               ("sign is flipped",)),
            "zero point not rounded": (edit(QPARAMS, ("int(round(-lo / scale))", "-lo / scale")), ("integer code",)),
            "per-channel minimum": (
                edit(QPARAMS, ("lo = min(x.min().item(), 0.0)", "lo = x.amin(dim=-1).clamp(max=0.0)"),
                     ("hi = max(x.max().item(), 0.0)", "hi = x.amax(dim=-1).clamp(min=0.0)"),
                     ("int(round(-lo / scale))", "torch.round(-lo / scale).int()")),
                ("one number per tensor", "not x.min(dim=...)")),
        },
        correct={
            "0-d tensors": code("""
                def qparams_minmax(x, bits):
                    lo, hi = x.min().clamp(max=0), x.max().clamp(min=0)
                    scale = (hi - lo) / (2**bits - 1)
                    return scale, torch.round(-lo / scale).to(torch.int64)
            """),
            "numpy, float64": code("""
                def qparams_minmax(x, bits):
                    v = x.numpy().astype(np.float64)
                    lo, hi = min(v.min(), 0.0), max(v.max(), 0.0)
                    scale = (hi - lo) / (2**bits - 1)
                    return scale, int(np.rint(-lo / scale))
            """),
            "a sorted list": code("""
                def qparams_minmax(x, bits):
                    values = sorted(x.flatten().tolist() + [0.0])
                    scale = (values[-1] - values[0]) / (2**bits - 1)
                    return scale, round(-values[0] / scale)
            """),
        }),
]
