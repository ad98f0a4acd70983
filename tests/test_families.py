"""Model families beyond Llama, on tiny random configurations (no download): every method trains, ALTER injects,
saves, loads and generates, and the TOFU suite runs. A family whose layers no adapter can target is refused with
one line that names it."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from alter.adapters.config import AlterConfig
from alter.adapters.loading import load_model_with_adapter
from alter.adapters.model import AlterModel
from alter.data.formatting import encode_prompt
from alter.data.sources import from_tofu
from alter.errors import UserError
from alter.evaluation.generation import greedy_generate
from alter.evaluation.runner import EvalSettings
from alter.evaluation.suites import get_suite
from alter.evaluation.suites.base import evaluate
from alter.methods import METHOD_NAMES
from alter.models import load_model
from alter.models.families import TESTED_FAMILIES
from alter.pipelines.runs import unlearn_run
from alter.training.recipe import build_recipe

SHAPES = {
    "gpt2": dict(n_embd=64, n_layer=4, n_head=4, n_positions=512),
    "gpt_neox": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128),
    "phi3": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                 intermediate_size=128),
    "gemma": dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=128, head_dim=16),
}
DEFAULT_SHAPE = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=128)


@pytest.fixture(scope="module")
def family_models(tiny_pair, tmp_path_factory):
    """A random tiny model of each family, saved with the tiny BPE tokenizer of the small world."""
    _, tokenizer = tiny_pair
    root = tmp_path_factory.mktemp("families")
    folders = {}
    for family in TESTED_FAMILIES:
        ids = dict(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
        config = AutoConfig.for_model(family, **SHAPES.get(family, DEFAULT_SHAPE), **ids)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        folders[family] = root / family
        model.save_pretrained(folders[family])
        tokenizer.save_pretrained(folders[family])
    return folders


@pytest.mark.parametrize("family", TESTED_FAMILIES)
def test_every_method_trains_saves_and_the_suite_runs_on_each_family(family, family_models, small_world, tmp_path):
    data = str(small_world)
    for method in METHOD_NAMES:
        overrides = ["train.max_steps=2", "train.precision=fp32", "train.batch_size=4"]
        if method == "alter":
            overrides += ["params.forget_heads=2", "params.phase1_epochs=0.1", "params.lr_b=0.05"]
        recipe = build_recipe(method, None, overrides)
        manifest = unlearn_run(str(family_models[family]), from_tofu(data, "forget10", "retain90"), recipe,
                               str(tmp_path / method))
        assert manifest["steps"] >= 2, (family, method)
        assert manifest["verdict"]["forget_probability"][0] > 0  # TOKENS.json scored before and after
    adapted, tokenizer = load_model_with_adapter(str(family_models[family]), str(tmp_path / "alter"))
    assert adapted.alter.config.router == "names" and len(adapted.alter.layers) > 0  # the default, on named authors
    suite = get_suite("tofu")
    options = suite.prepare_options({"data": data, "forget_split": "forget10", "probes": "instruction"})
    log = evaluate(suite, adapted, tokenizer, options, EvalSettings(limit=2, max_new_tokens=6, precision="fp32"))
    summary, _ = suite.summarize(log, None)
    assert 0 <= summary["forget_Q_A_Prob"] <= 1 and "forget_gate_rate" in summary
    assert "forget_probe_instruction_Q_A_Prob" in summary


@pytest.mark.parametrize("family", TESTED_FAMILIES)
def test_alter_round_trip_and_generation_on_each_family(family, family_models, tmp_path, random_alter_adapter):
    model, tokenizer = load_model(str(family_models[family]))
    adapter = random_alter_adapter(model, seed=2, router="layer", rank=4)
    prompts = [encode_prompt(tokenizer, q) for q in ("Where was the author born?", "Who wrote it?")]
    before = greedy_generate(model, tokenizer, prompts, max_new_tokens=8)
    ids = torch.tensor([prompts[0]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    adapter.save(tmp_path, family)
    reloaded, _ = load_model(str(family_models[family]))
    AlterModel.load(reloaded, tmp_path)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, logits)
    assert greedy_generate(reloaded, tokenizer, prompts, max_new_tokens=8) == before
    names = json.loads((tmp_path / "alter_config.json").read_text())["config"]["target_modules"]
    assert names and all(any(n.endswith(name) for n, _ in adapter.layers) for name in names)


def test_a_family_with_no_adaptable_layers_is_refused_by_name(family_models):
    model, _ = load_model(str(family_models["llama"]))
    model.config.model_type = "mystery"
    for _, module in list(model.named_modules()):
        for name, child in list(module.named_children()):
            if name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
                setattr(module, name + "_renamed", child)
                delattr(module, name)
    with pytest.raises(UserError, match="model family 'mystery' is not supported"):
        AlterModel(model, AlterConfig())
