"""The deployment really runs on a Raspberry Pi (issue #12), checked under emulation.

The bundle's run.py (qsal_lab.edge.build_bundle of the shipped MNIST SmallCNN) classifies the same 64
MNIST test images on this x86 machine and inside an emulated arm64 Raspberry Pi OS 12-like root
(tools/pi_emulator.sh: Debian bookworm arm64, Python 3.11, glibc 2.36, the host's onnxruntime), once
with a Pi 4 CPU model (QEMU_CPU=cortex-a72: no int8 dot-product instructions) and once with a Pi 5
one (cortex-a76: with them), for the fp32 and the int8 model. The predictions must be the same
everywhere, and the logits within tolerances justified below. The test also shows that the two CPU
models really take different int8 code: QEMU's log of the guest code it translated holds UDOT/SDOT
instructions for the int8 model on cortex-a76 and none on cortex-a72.

Measured differences, versions and emulated timings go to bench/results/pi_emulation.json (written
before the asserts, so a failure is recorded too), which bench/edge.py reports.
Emulated timings are QEMU's on x86, not a Pi's: this test checks function only.

Skipped, saying why, where the emulator cannot run (not Linux, no root privileges, no
qemu-user-static / binfmt-support / debootstrap, binfmt_misc unavailable).
"""
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "pi_emulator.sh"
RESULT = ROOT / "bench" / "results" / "pi_emulation.json"
CPUS = {"cortex-a72": "Raspberry Pi 4 (BCM2711)", "cortex-a76": "Raspberry Pi 5 (BCM2712)"}
HAS_DOTPROD = {"cortex-a72": False, "cortex-a76": True}  # Armv8.2 dot product (ASIMDDP): A76 yes, A72 no
MODELS = {"fp32": "model_fp32.onnx", "int8": "model_int8.onnx"}
N_IMAGES = 64
HWCAP_ASIMDDP = 1 << 20  # Linux arm64 AT_HWCAP bit for the dot-product instructions

# fp32: the same graph through other float kernels (x86 AVX-512 vs arm64 NEON) changes summation order
# and FMA use, so the last bits of each logit differ (measured: 7.6e-6 on logits up to 32). 1e-4 of the
# largest logit (3e-3 here) is ~400x that and still far below any logit gap that decides a prediction.
FP32_RTOL = 1e-4
# int8: the logits are dequantized uint8 codes (the last DequantizeLinear), so they move in steps of its
# scale. Integer accumulation is exact on every CPU, but requantization (scale multiply, rounding) is
# kernel code that may differ between x86 and arm64: allow one code, i.e. one step (measured: 0 steps).
INT8_STEPS = 1


def missing_prerequisites() -> str | None:
    """Why the emulator cannot run here, or None."""
    if not sys.platform.startswith("linux"):
        return f"needs Linux (binfmt_misc, mount namespaces), this is {sys.platform}"
    if os.geteuid() != 0:
        return "needs root privileges (binfmt_misc, mounts, chroot); run as root, e.g. in CI"
    tools = {"qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support",
             "debootstrap": "debootstrap", "unshare": "util-linux", "chroot": "coreutils"}
    missing = [f"{tool} (apt-get install {package})" for tool, package in tools.items() if not shutil.which(tool)]
    return "missing " + ", ".join(missing) if missing else None


def emulator(*args, timeout=3600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "QSAL_PI_PYTHON": sys.executable})


def in_pi(folder: Path, cpu: str, *command, timeout=900) -> tuple[str, float]:
    """(stdout, wall seconds) of `command` run in `folder` (seen as /work) inside the emulated Pi."""
    began = time.perf_counter()
    out = emulator("run", cpu, "--dir", str(folder), "--", *command, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(command)} in the emulated Pi ({cpu}) failed:\n{out.stderr[-3000:]}"
    return out.stdout, time.perf_counter() - began


@pytest.fixture(scope="module")
def pi_root():
    """The emulated root, set up (minutes and ~510 MB the first time, under a second once cached)."""
    reason = missing_prerequisites()
    if reason:
        pytest.skip(f"no Raspberry Pi emulation: {reason}")
    began = time.perf_counter()
    setup = emulator("setup")
    seconds = time.perf_counter() - began
    if setup.returncode != 0:
        if "binfmt_misc" in setup.stderr:  # e.g. an unprivileged container: the machine, not the code
            pytest.skip(f"no Raspberry Pi emulation: {setup.stderr.strip().splitlines()[-1]}")
        pytest.fail(f"tools/pi_emulator.sh setup failed:\n{setup.stderr[-3000:]}")
    return {"setup_seconds": seconds}


@pytest.fixture(scope="module")
def bundle(mnist_bundle, tmp_path_factory):
    """A copy of the MNIST deployment bundle plus inputs.npy: 64 uint8 MNIST test images (run.py
    normalises them with the bundle's preprocess.json, on each machine)."""
    from qsal_lab.data import load_dataset

    folder = tmp_path_factory.mktemp("pi") / "bundle"
    shutil.copytree(mnist_bundle, folder)
    test = load_dataset("mnist", "test", subset=N_IMAGES, seed=0)
    np.save(folder / "inputs.npy", test.images.numpy())  # (64, 1, 28, 28) uint8
    return folder


def runner_args(model: str) -> list[str]:
    # --expect: the bundle's own device check (the README's last step) on its sample PNGs, in the same run
    # a short --bench: an emulated batch-1 latency (QEMU's, labelled so)
    return ["run.py", "--model", model, "--expect", "samples/expected.json", "inputs.npy", "samples/",
            "--bench", "--warmup", "4", "--queries", "32", "--seconds", "0"]


def run_on_host(folder: Path, model: str) -> dict:
    out = subprocess.run([sys.executable, *runner_args(model)], cwd=folder, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, f"run.py on the host failed: {out.stderr}"
    return json.loads(out.stdout)


def int8_output_step(path: Path) -> float:
    """The scale of the int8 model's last DequantizeLinear: the spacing of its logits."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(path)
    producers = {out: node for node in proto.graph.node for out in node.output}
    node = producers[proto.graph.output[0].name]
    assert node.op_type == "DequantizeLinear", f"the int8 model's output comes from {node.op_type}, not DequantizeLinear"
    scale = next(t for t in proto.graph.initializer if t.name == node.input[1])
    return float(numpy_helper.to_array(scale))


def compare(host: dict, pi: dict) -> dict:
    a = np.array([p["logits"] for p in host["predictions"]])
    b = np.array([p["logits"] for p in pi["predictions"]])
    assert [p["input"] for p in host["predictions"]] == [p["input"] for p in pi["predictions"]]
    return {"max_abs_logit_diff": float(np.abs(a - b).max()), "max_abs_logit": float(np.abs(a).max()),
            "predictions_equal": [p["class"] for p in host["predictions"]] == [p["class"] for p in pi["predictions"]],
            "mismatched_inputs": [p["input"] for p, q in zip(host["predictions"], pi["predictions"])
                                  if p["class"] != q["class"]]}


def hwcap(folder: Path, cpu: str) -> int:
    """AT_HWCAP as the emulated kernel gives it to a program (QEMU's CPU model's features)."""
    script = ("import struct; aux = dict(struct.iter_unpack('<QQ', open('/proc/self/auxv', 'rb').read())); "
              "print(aux.get(16, 0))")
    return int(in_pi(folder, cpu, "python", "-c", script)[0])


def dot_instructions(log: Path) -> tuple[int, int]:
    """(guest instructions QEMU translated, how many were UDOT/SDOT), read from its `-d in_asm` log.

    Lines look like `0x5500817850:  a9b27bfd  stp x29, ...`; we decode the instruction word ourselves,
    since QEMU 7.2's disassembler prints the dot-product instructions as `.byte`.
    """
    total = dots = 0
    with open(log, errors="replace") as f:
        for line in f:
            if not line.startswith("0x"):
                continue
            parts = line.split()
            if len(parts) < 2 or len(parts[1]) != 8:
                continue
            word, total = int(parts[1], 16), total + 1
            size = word >> 22 & 3
            vector = word & 0x9F20FC00 == 0x0E009400   # UDOT/SDOT Vd.4S, Vn.16B, Vm.16B
            element = word & 0x9F00F400 == 0x0F00E000  # UDOT/SDOT Vd.4S, Vn.16B, Vm.4B[i]
            dots += (vector or element) and size == 2
    return total, dots


def int8_code_probe(folder: Path, cpu: str) -> dict:
    """Run the int8 model on the sample images with QEMU logging the guest code it translates."""
    log = folder / f"qemu-in_asm-{cpu}.log"
    in_pi(folder, cpu, "/usr/bin/env", "QEMU_LOG=in_asm", f"QEMU_LOG_FILENAME=/work/{log.name}",
          "python", "run.py", "--model", MODELS["int8"], "samples/")
    total, dots = dot_instructions(log)
    log.unlink()  # ~50 MB
    return {"translated_instructions": total, "udot_sdot_instructions": dots}


def test_bundle_runs_on_emulated_pi4_and_pi5_like_on_x86(pi_root, bundle):
    import onnxruntime

    host = {kind: run_on_host(bundle, model) for kind, model in MODELS.items()}
    step = int8_output_step(bundle / MODELS["int8"])
    largest = max(abs(v) for p in host["fp32"]["predictions"] for v in p["logits"])
    tolerance = {"fp32": FP32_RTOL * max(1.0, largest), "int8": INT8_STEPS * step}
    glibc = in_pi(bundle, "cortex-a72", "/bin/sh", "-c", "ldd --version | head -n 1")[0].split()[-1]
    qemu = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    result = {
        "format": 1,
        "what": f"run.py of the MNIST SmallCNN deployment bundle (fp32 and int8) on {N_IMAGES} MNIST test images "
                "and the bundle's samples: "
                "x86 ONNX Runtime vs an emulated Raspberry Pi (QEMU user mode, Debian 12 arm64 root)",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": len(host["fp32"]["predictions"]),  # inputs.npy and the bundle's sample PNGs
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "onnxruntime": onnxruntime.__version__},
        "root": {"system": "Debian 12 (bookworm) arm64 minbase, as Raspberry Pi OS 12", "glibc": glibc, "qemu": qemu},
        "tolerance": {"fp32_max_abs_logit_diff": tolerance["fp32"], "int8_max_abs_logit_diff": tolerance["int8"],
                      "int8_output_step": step},
        "setup_seconds": round(pi_root["setup_seconds"], 1),
        "cpus": {},
        "note": "emulated_* timings are QEMU user-mode emulation on x86, NOT Raspberry Pi timings",
    }
    for cpu, device in CPUS.items():
        entry = {"device": device + ", emulated", "qemu_cpu": cpu,
                 "hwcap_asimddp": bool(hwcap(bundle, cpu) & HWCAP_ASIMDDP)}
        for kind, model in MODELS.items():
            stdout, seconds = in_pi(bundle, cpu, "python", *runner_args(model))
            pi = json.loads(stdout)
            entry.update(machine=pi["machine"], python=pi["versions"]["python"],
                         onnxruntime=pi["versions"]["onnxruntime"], numpy=pi["versions"]["numpy"])
            entry[kind] = {**compare(host[kind], pi), "bundle_expect": pi["agreement"],
                           "emulated_wall_seconds": round(seconds, 2),
                           "emulated_latency_ms": {"per_input_batch64": pi["latency_ms"]["per_input"],
                                                   "p50_batch1": pi["bench"]["p50_ms"]}}
        entry["int8_code"] = int8_code_probe(bundle, cpu)
        result["cpus"][cpu] = entry
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")

    assert glibc == "2.36", f"glibc {glibc} in the root, Raspberry Pi OS 12 has 2.36"
    for cpu, entry in result["cpus"].items():
        assert entry["machine"] == "aarch64", f"{cpu}: run.py saw machine {entry['machine']}, not aarch64"
        assert entry["python"].startswith("3.11."), f"{cpu}: Python {entry['python']}, Raspberry Pi OS 12 has 3.11"
        assert entry["onnxruntime"] == onnxruntime.__version__, (
            f"{cpu}: onnxruntime {entry['onnxruntime']} in the root, {onnxruntime.__version__} on the host")
        assert entry["hwcap_asimddp"] == HAS_DOTPROD[cpu], (
            f"{cpu}: the emulated CPU {'lacks' if HAS_DOTPROD[cpu] else 'has'} the dot-product instructions; "
            "was QEMU_CPU ignored?")
        for kind in MODELS:
            got = entry[kind]
            assert got["predictions_equal"], (f"{cpu} {kind}: predictions differ from x86 on "
                                              f"{got['mismatched_inputs']} (see {RESULT})")
            assert got["max_abs_logit_diff"] <= tolerance[kind] * (1 + 1e-6), (
                f"{cpu} {kind}: max |logit diff| vs x86 = {got['max_abs_logit_diff']:.3g} > {tolerance[kind]:.3g} "
                f"(see {RESULT})")
            assert got["bundle_expect"]["different_class"] == [], (
                f"{cpu} {kind}: run.py --expect finds other classes than the bundle's expected.json")
        code = entry["int8_code"]
        assert code["translated_instructions"] > 10_000, f"{cpu}: QEMU's in_asm log was not readable: {code}"
        if HAS_DOTPROD[cpu]:
            assert code["udot_sdot_instructions"] > 0, f"{cpu}: onnxruntime's int8 kernels use no dot product"
        else:
            assert code["udot_sdot_instructions"] == 0, f"{cpu}: dot-product instructions on a CPU without them"
