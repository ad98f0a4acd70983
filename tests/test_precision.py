"""Precision by capability: `auto` picks bf16 on CPU only where it is native and measured faster."""

import json
import os
import subprocess
import sys

import pytest
import torch

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
