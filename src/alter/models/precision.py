"""Device and numeric precision: weights stay fp32, compute runs in fp32 or under bf16/fp16 autocast (frozen
weights that are not saved may be held in the compute dtype: `hold_frozen_linears_in_compute_dtype`).

`auto` is decided by what the machine computes fast, never assumed:
- CUDA: bf16 where the GPU supports it, fp16 otherwise.
- CPU: bf16 only where oneDNN has native bf16 kernels (AVX512-BF16 or AMX) *and* a one-time micro-benchmark (a
  Linear 512 -> 2048 forward and backward on 1024 rows, the fastest of 15 alternating runs each) finds bf16 autocast
  at least 1.25x faster than fp32 (1.63-1.86x on this project's Sapphire Rapids VM). On AVX2-only CPUs bf16 is
  emulated and about 7x slower, so they get fp32. The benchmark's result is cached per machine in
  `$ALTER_CACHE/precision.json`, keyed by CPU model, instruction set, torch version and the ISA limits of the
  environment (`ATEN_CPU_CAPABILITY`, `ONEDNN_MAX_CPU_ISA`).
Every manifest and summary records `machine_facts`: the device, the CPU capability and the precision chosen.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from functools import lru_cache
from pathlib import Path

import torch

from alter.errors import UserError
from alter.io import cache_root, write_json

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BF16_MIN_SPEEDUP = 1.25  # below this, bf16's rounding is not worth it
# Narrower models get fp32 under `auto` on CPU: their training steps are not faster in bf16 end to end (the tiny
# model, 256 wide, on the bf16-native VM: 150 fine-tuning steps in 13.5-13.8 s fp32, 13.7-13.9 s bf16), although
# its forward and backward alone are (1.52x): the rest of a step (optimizer, data, small ops) dominates. A fixed
# width, measured on one machine; timing a few real steps of the model per machine would let the machine decide.
NARROW_WIDTH = 512
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UserError(f"--precision: unknown value {precision!r} (choose from {', '.join(PRECISIONS)})")
    return precision


def resolve_precision(precision: str, device: torch.device | str, model: str | None = None) -> str:
    """`model` (a spec) lets `auto` take fp32 on CPU for models narrower than `NARROW_WIDTH`."""
    check_precision(precision)
    device = torch.device(device)
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise UserError("--precision fp16 is not supported on CPU; use bf16 or fp32")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    width = model_width(model)
    if width is not None and width < NARROW_WIDTH:
        return "fp32"
    return "bf16" if cpu_bf16_verdict()["bf16_faster"] else "fp32"


def model_width(spec: str | None) -> int | None:
    """A model's hidden size without loading it: the tiny model's, or a local folder's `config.json`."""
    if spec == "tiny":
        from alter.models.tiny import TinyConfig

        return TinyConfig.hidden_size
    try:
        config = json.loads((Path(spec) / "config.json").read_text()) if spec else {}
    except (OSError, json.JSONDecodeError):
        return None
    widths = [config[key] for key in ("hidden_size", "n_embd", "d_model") if isinstance(config.get(key), int)]
    return widths[0] if widths else None


def cpu_capability() -> dict:
    """What the CPU offers to torch: its instruction set as torch dispatches it, and native bf16 in oneDNN."""
    return {"cpu": _cpu_model(), "isa": torch.backends.cpu.get_cpu_capability(),
            "bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
            "threads": torch.get_num_threads()}


def machine_facts(device: torch.device | str, precision: str) -> dict:
    """Recorded beside every result: timings and per-item probabilities depend on both."""
    device = torch.device(device)
    facts = {"device": device.type, "precision": precision}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    else:
        facts.update(cpu_capability())
    return facts


@lru_cache(maxsize=1)
def cpu_bf16_verdict() -> dict:
    """Whether bf16 autocast beats fp32 on this CPU: from the cache, else measured once and cached."""
    capability = cpu_capability()
    if not capability["bf16_native"]:
        return {**capability, "bf16_faster": False, "reason": "no native bf16 kernels (oneDNN)"}
    key = json.dumps([capability["cpu"], capability["isa"], torch.__version__,
                      [os.environ.get(name, "") for name in ISA_LIMITS]])
    path = _cache_file()
    cached = _read_cache(path)
    if key not in cached:
        fp32, bf16 = linear_step_seconds()
        cached[key] = {"fp32_seconds": round(fp32, 5), "bf16_seconds": round(bf16, 5),
                       "bf16_faster": fp32 / bf16 >= BF16_MIN_SPEEDUP}
        _write_cache(path, cached)
    verdict = cached[key]
    return {**capability, **verdict, "reason": f"micro-benchmark: fp32 {verdict['fp32_seconds']} s, "
                                               f"bf16 {verdict['bf16_seconds']} s per step"}


def linear_step_seconds(repeats: int = 15) -> tuple[float, float]:
    """Fastest time of a Linear 512 -> 2048 forward and backward on 1024 rows in fp32 and under bf16 autocast.

    The two are measured alternately and the fastest of each kept: on a small shared VM, a median of short runs
    measured one after the other gave ratios from 1.2x to 2.1x on the same machine, flipping the choice."""
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(512, 2048)
    x = torch.randn(1024, 512, generator=generator)
    times: dict[bool, list[float]] = {False: [], True: []}
    for repeat in range(repeats + 2):
        for bf16 in (False, True):
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = layer(x).float().square().mean()
            loss.backward()
            if repeat >= 2:  # the first calls pick and build kernels
                times[bf16].append(time.perf_counter() - started)
    return min(times[False]), min(times[True])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_file() -> Path:
    return cache_root() / "precision.json"


def _read_cache(path: Path) -> dict:
    try:
        cached = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return cached if isinstance(cached, dict) else {}


def _write_cache(path: Path, cached: dict) -> None:
    try:
        write_json(path, cached)
    except (OSError, UserError):
        pass  # an unwritable cache only means measuring again next time


def compute_dtype(precision: str) -> torch.dtype | None:
    """The dtype autocast computes in, None for fp32 (no autocast)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    device = torch.device(device)
    dtype = compute_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def hold_frozen_linears_in_compute_dtype(model: torch.nn.Module, precision: str, trainable: set[int],
                                         among: set[int] | None = None, untie: bool = False) -> int:
    """Store the weights (and biases) of `model`'s frozen `nn.Linear` layers in autocast's dtype; return the bytes
    this frees. Autocast rounds them to that dtype in every forward anyway, and keeps the rounded copy of each layer
    for the backward, so training computes bitwise the same while neither the fp32 originals nor the per-step
    copies are held. `trainable`: ids of the parameters that train (kept as they are); `among`: ids of the only
    Linear modules to consider (None = all). A weight shared with another kind of module (an output layer tied to
    the input embedding, whose lookup is not autocast) is kept, or with `untie` the Linear gets its own copy in the
    compute dtype (more memory, returned as negative bytes). Autocast keeps its cast of a weight through a forward
    only for weights that require grad, so a frozen fp32 output layer is cast again at every generated token
    (docs/results.md, "ALTER's evaluation cost"). Only for results that do not save these weights,
    and only in one process or DDP: FSDP and DeepSpeed flatten parameters and need one dtype.
    Shown by `pytest tests/test_precision.py -k frozen_linears` (the same adapter, bit for bit, either way)."""
    dtype = compute_dtype(precision)
    if dtype is None:
        return 0
    kept = trainable | {id(p) for module in model.modules() if not isinstance(module, torch.nn.Linear)
                        for p in module.parameters(recurse=False)}
    freed = 0
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear) or (among is not None and id(module) not in among):
            continue
        for name, parameter in list(module.named_parameters(recurse=False)):
            if parameter.dtype != torch.float32 or id(parameter) in trainable:
                continue
            if id(parameter) in kept:
                if untie:
                    setattr(module, name, torch.nn.Parameter(parameter.detach().to(dtype), requires_grad=False))
                    freed -= parameter.numel() * dtype.itemsize
                continue
            freed += parameter.numel() * (parameter.element_size() - dtype.itemsize)
            parameter.data = parameter.data.to(dtype)
    return freed
