"""Precision by capability: `auto` picks bf16 on CPU only where it is native and measured faster."""

import json
import os
import subprocess
import sys

import pytest
import torch

from alter.data.batching import WIDTH_MULTIPLE
from alter.errors import UserError
from alter.models import precision as precision_module
from alter.models.precision import machine_facts, resolve_precision

AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}

PROBE = """
import json, torch
from alter.models.precision import cpu_bf16_verdict, resolve_precision
print(json.dumps({"auto": resolve_precision("auto", "cpu"), **cpu_bf16_verdict()}))
"""


def run_probe(tmp_path, extra_env):
    env = {**os.environ, "ALTER_CACHE": str(tmp_path), **extra_env}
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_an_avx2_only_cpu_gets_fp32_without_a_benchmark(tmp_path):
    verdict = run_probe(tmp_path, AVX2_ONLY)
    assert verdict["isa"] == "AVX2" and verdict["bf16_native"] is False
    assert verdict["auto"] == "fp32"
    assert not (tmp_path / "precision.json").exists()  # nothing to measure: bf16 would be emulated


def test_a_native_bf16_cpu_is_measured_once_and_the_verdict_is_cached(tmp_path):
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no native bf16")
    first = run_probe(tmp_path, {})
    cache = json.loads((tmp_path / "precision.json").read_text())
    (entry,) = cache.values()
    assert entry["bf16_faster"] == (entry["fp32_seconds"] / entry["bf16_seconds"] >= precision_module.BF16_MIN_SPEEDUP)
    assert first["auto"] == ("bf16" if entry["bf16_faster"] else "fp32")
    entry["bf16_faster"] = not entry["bf16_faster"]  # a cached verdict is used as is: no second measurement
    (tmp_path / "precision.json").write_text(json.dumps(cache))
    assert run_probe(tmp_path, {})["auto"] == ("bf16" if entry["bf16_faster"] else "fp32")
    # the same machine with its ISA limited is another key
    assert run_probe(tmp_path, AVX2_ONLY)["auto"] == "fp32"


def test_explicit_precisions_and_bad_values():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(UserError, match="fp16 is not supported on CPU"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(UserError, match="--precision: unknown value 'fp8'"):
        resolve_precision("fp8", "cpu")


def test_machine_facts_name_the_capability_and_precision():
    facts = machine_facts("cpu", "fp32")
    assert facts["device"] == "cpu" and facts["precision"] == "fp32"
    assert facts["isa"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(facts["bf16_native"], bool) and facts["threads"] >= 1


def test_auto_takes_fp32_for_narrow_models_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_bf16_verdict", lambda: {"bf16_faster": True})
    (tmp_path / "wide").mkdir()
    (tmp_path / "wide" / "config.json").write_text(json.dumps({"hidden_size": 576}))
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"n_embd": 128}))
    assert precision_module.model_width("tiny") == 256
    assert resolve_precision("auto", "cpu", "tiny") == "fp32"
    assert resolve_precision("auto", "cpu", str(tmp_path / "gpt2")) == "fp32"
    assert resolve_precision("auto", "cpu", str(tmp_path / "wide")) == "bf16"
    assert resolve_precision("auto", "cpu", "some/hub-id") == "bf16"  # width unknown: the machine decides
    assert resolve_precision("bf16", "cpu", "tiny") == "bf16"  # an explicit choice is kept


class TiedToy(torch.nn.Module):
    """An embedding tied to the output layer, a frozen Linear with a bias, and a Linear that trains."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(11, 6)
        self.frozen = torch.nn.Linear(6, 5)
        self.trains = torch.nn.Linear(5, 6, bias=False)
        self.out = torch.nn.Linear(6, 11, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, ids):
        return self.out(self.trains(self.frozen(self.embed(ids))).relu())


def test_frozen_linears_in_the_compute_dtype_compute_bitwise_the_same_under_autocast():
    from copy import deepcopy

    from alter.models.precision import autocast, hold_frozen_linears_in_compute_dtype

    torch.manual_seed(0)
    kept = TiedToy()
    held = deepcopy(kept)
    assert hold_frozen_linears_in_compute_dtype(held, "fp32", set()) == 0
    assert all(p.dtype == torch.float32 for p in held.parameters())
    freed = hold_frozen_linears_in_compute_dtype(held, "bf16", {id(held.trains.weight)})
    assert freed == (6 * 5 + 5) * 2  # the frozen weight and bias, 2 bytes each saved; tied and trained ones kept
    assert (held.frozen.weight.dtype, held.frozen.bias.dtype) == (torch.bfloat16, torch.bfloat16)
    assert held.trains.weight.dtype == held.embed.weight.dtype == held.out.weight.dtype == torch.float32
    ids = torch.tensor([[1, 4, 9, 2], [3, 3, 0, 10]])
    grads = []
    for model in (kept, held):
        with autocast("bf16", "cpu"):
            loss = model(ids).float().logsumexp(-1).mean()
        loss.backward()
        grads.append((loss.detach(), model.trains.weight.grad.clone(), model.embed.weight.grad.clone()))
    for kept_tensor, held_tensor in zip(*grads):
        assert torch.equal(kept_tensor, held_tensor)
    assert hold_frozen_linears_in_compute_dtype(held, "bf16", set(), among={id(held.trains)}) == 5 * 6 * 2
    assert held.frozen.weight.dtype == torch.bfloat16 and held.trains.weight.dtype == torch.bfloat16


def test_untying_gives_a_tied_output_layer_its_own_copy_and_the_same_outputs_under_autocast():
    from copy import deepcopy

    from alter.models.precision import autocast, hold_frozen_linears_in_compute_dtype

    torch.manual_seed(0)
    kept = TiedToy().requires_grad_(False)  # frozen, as under an adapter: autocast keeps no cast of its weights
    untied = deepcopy(kept)
    freed = hold_frozen_linears_in_compute_dtype(untied, "bf16", set(), untie=True)
    assert freed == (6 * 5 + 5 + 5 * 6) * 2 - 11 * 6 * 2  # three frozen tensors halved; the output layer's copy added
    assert untied.out.weight is not untied.embed.weight
    assert (untied.out.weight.dtype, untied.embed.weight.dtype) == (torch.bfloat16, torch.float32)
    assert torch.equal(untied.out.weight, kept.embed.weight.to(torch.bfloat16))
    ids = torch.tensor([[1, 4, 9, 2], [3, 3, 0, 10]])
    with torch.no_grad(), autocast("bf16", "cpu"):
        assert torch.equal(untied(ids), kept(ids))


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one mixed-precision setting per process; these runs need bf16 in a suite that trains fp32."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.usefixtures("fresh_accelerator_state")
@pytest.mark.parametrize("method", ["alter", "npo", "npo+lora"])
def test_frozen_linears_in_the_compute_dtype_leave_an_unlearning_run_bitwise_the_same(method, tiny_runs, small_world,
                                                                                     tmp_path, monkeypatch):
    """ALTER's frozen base, NPO's frozen reference copy and a LoRA adapter's base held in bf16: the same saved result
    either way; then the result evaluated on a base held in bf16 scores and generates as on an fp32 one."""
    from safetensors.torch import load_file

    from alter.data.sources import from_tofu
    from alter.methods import base as methods_base
    from alter.training import unlearn as unlearn_module
    from alter.training.recipe import build_recipe

    data = from_tofu(str(small_world), "forget10", "retain90")
    name, _, lora = method.partition("+")
    recipe = build_recipe(name, None, ["train.precision=bf16", "train.max_steps=2", "train.warmup_ratio=0",
                                       *(["lora.enabled=true"] if lora else [])])
    held = unlearn_module.unlearn(str(tiny_runs / "target"), data, recipe, str(tmp_path / "held"))
    monkeypatch.setattr(unlearn_module, "hold_frozen_linears_in_compute_dtype", lambda *args, **kwargs: 0)
    monkeypatch.setattr(methods_base, "hold_frozen_linears_in_compute_dtype", lambda *args, **kwargs: 0)
    kept = unlearn_module.unlearn(str(tiny_runs / "target"), data, recipe, str(tmp_path / "kept"))
    files = sorted(p.name for p in (tmp_path / "held").glob("*.safetensors"))
    assert files and files == sorted(p.name for p in (tmp_path / "kept").glob("*.safetensors"))
    for file in files:
        held_tensors, kept_tensors = (load_file(str(tmp_path / run / file)) for run in ("held", "kept"))
        assert held_tensors.keys() == kept_tensors.keys()
        for key, tensor in held_tensors.items():
            assert tensor.dtype == kept_tensors[key].dtype and torch.equal(tensor, kept_tensors[key]), key
    if method == "npo":  # the full model is saved: its own weights stay; the reference copy shrinks
        assert held["frozen_linears_compute_dtype_mb"] == 0
        assert held["reference_copy_mb"] < kept["reference_copy_mb"]
    else:
        assert held["frozen_linears_compute_dtype_mb"] > 0 == kept["frozen_linears_compute_dtype_mb"]
    monkeypatch.undo()
    model, adapter = str(tiny_runs / "target"), str(tmp_path / "held")
    if method == "npo":  # a full model, no adapter
        model, adapter = adapter, None
    assert evaluated_under_bf16(model, adapter, data.forget, "bf16") == \
        evaluated_under_bf16(model, adapter, data.forget, "fp32")


def evaluated_under_bf16(model_spec: str, adapter: str | None, rows: list[dict], held_as: str):
    """Per-token answer log-probabilities and greedy answers under bf16 autocast, the base loaded for `held_as`."""
    from alter.adapters.loading import load_model_with_adapter
    from alter.data.formatting import encode_rows
    from alter.evaluation.generation import greedy_generate
    from alter.evaluation.scoring import score_answers

    model, tokenizer = load_model_with_adapter(model_spec, adapter, precision=held_as)
    assert any(p.dtype == torch.bfloat16 for p in model.parameters()) == (held_as == "bf16")
    items = encode_rows(tokenizer, rows)
    scores = score_answers(model, items, tokenizer.pad_token_id, precision="bf16")
    texts = greedy_generate(model, tokenizer, [item.input_ids[: item.prompt_length] for item in items],
                            max_new_tokens=12, precision="bf16")
    routes = [s.route.tolist() if s.route is not None else None for s in scores]
    return [s.logprobs.tolist() for s in scores], routes, texts


def _mapped_from(path) -> list[tuple[int, int]]:
    """Address ranges of this process mapped from the file `path` (/proc/self/maps)."""
    ranges = []
    for line in open("/proc/self/maps"):
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(path):
            start, end = (int(value, 16) for value in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads Linux's /proc/self/maps")
def test_weights_copied_out_of_the_file_map_live_in_no_mapping_of_the_file(tiny_runs):
    from pathlib import Path

    from alter.models import load_model
    from alter.models.loading import copy_out_of_file_map

    model, _ = load_model(str(tiny_runs / "target"))
    weights = [str(p.resolve()) for p in Path(tiny_runs / "target").glob("*.safetensors")]
    inside = lambda: [p for p in model.parameters()  # noqa: E731
                      if any(start <= p.data_ptr() < end for path in weights for start, end in _mapped_from(path))]
    assert inside(), "loaded weights are expected to be views of the file's map (else this test shows nothing)"
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    copy_out_of_file_map(model)
    assert not inside()
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


def record_batch_widths(monkeypatch, module, name: str) -> list[int]:
    """Replace `module.name` (a batch source class) by a subclass that records the width of every batch it gives."""
    widths: list[int] = []

    class Recording(getattr(module, name)):
        def batch(self, epoch, index):
            batch = super().batch(epoch, index)
            parts = [batch] if "input_ids" in batch else [part for part in batch.values() if isinstance(part, dict)]
            widths.extend(part["input_ids"].shape[1] for part in parts)
            return batch

    monkeypatch.setattr(module, name, Recording)
    return widths


@pytest.mark.usefixtures("fresh_accelerator_state")
@pytest.mark.parametrize("precision, multiple", [("fp32", 1), ("bf16", WIDTH_MULTIPLE)])
def test_finetuning_and_unlearning_pad_their_batches_as_the_precision_asks(
        precision, multiple, small_world, tiny_runs, tmp_path, monkeypatch):
    """Under bf16 every batch is as wide as a multiple of `WIDTH_MULTIPLE` tokens (oneDNN keeps a kernel per shape);
    fp32 pads to the longest item only."""
    from dataclasses import replace

    from alter.data.sources import from_tofu
    from alter.training import finetune as finetune_module
    from alter.training import unlearn as unlearn_module
    from alter.training.recipe import build_recipe

    recipe = finetune_module.default_recipe("tiny", lora=False)
    finetuned = record_batch_widths(monkeypatch, finetune_module, "QABatches")
    finetune_module.finetune("tiny", str(small_world), "forget10", str(tmp_path / "f"),
                             replace(recipe, train=replace(recipe.train, precision=precision, max_steps=2)))
    unlearned = record_batch_widths(monkeypatch, unlearn_module, "UnlearnBatches")
    unlearn_module.unlearn(str(tiny_runs / "target"), from_tofu(str(small_world), "forget10", "retain90"),
                           build_recipe("npo", None, [f"train.precision={precision}", "train.max_steps=2"]),
                           str(tmp_path / "u"))
    assert len(finetuned) == 2 and len(unlearned) >= 4  # npo's batches hold a forget and a retain part
    for widths in (finetuned, unlearned):
        assert all(width % multiple == 0 for width in widths), widths
        if multiple == 1:  # each source's unpadded widths are not all multiples by chance, so bf16's are its padding
            assert any(width % WIDTH_MULTIPLE for width in widths), widths
