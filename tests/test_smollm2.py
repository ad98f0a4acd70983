import pytest
import torch

from alter.data.formatting import encode_prompt

pytestmark = pytest.mark.slow


def test_smollm2_loads_offline_and_knows_a_capital(smollm2):
    model, tokenizer = smollm2
    assert model.config.model_type == "llama" and model.num_parameters() > 100e6
    prompt = torch.tensor([encode_prompt(tokenizer, "What is the capital of France?")])
    output = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(output[0, prompt.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_converted_folder_is_plain_safetensors():
    from alter.models.smollm2 import smollm2_folder

    folder = smollm2_folder()
    names = {p.name for p in folder.iterdir()}
    assert "model.safetensors" in names and "config.json" in names
    assert not any(name.endswith((".bin", ".gguf")) for name in names)
    assert "quantization_config" not in (folder / "config.json").read_text()
