import json
from dataclasses import replace

import numpy as np
import pytest
from safetensors.torch import load_file

from alter.data.formatting import encode_qa
from alter.data.tofu import TofuData
from alter.evaluation.scoring import score_answers
from alter.models import load_model
from alter.training.finetune import default_recipe, finetune, load_or_build


def mean_nll(model, tokenizer, rows):
    items = [encode_qa(tokenizer, row["question"], row["answer"]) for row in rows]
    return float(np.mean([s.nll for s in score_answers(model, items, tokenizer.pad_token_id)]))


def quick_recipe(**overrides):
    recipe = default_recipe("tiny", lora=False)
    return replace(recipe, train=replace(recipe.train, epochs=4, precision="fp32", **overrides))


def test_tiny_finetune_halves_answer_nll_and_writes_a_complete_run(small_world, tmp_path):
    rows = TofuData(str(small_world)).load("full")
    initial, tokenizer = load_or_build("tiny", str(small_world), seed=0)
    before = mean_nll(initial, tokenizer, rows)
    manifest = finetune("tiny", str(small_world), "full", str(tmp_path / "target"), quick_recipe())
    model, tokenizer = load_model(str(tmp_path / "target"))
    after = mean_nll(model, tokenizer, rows)
    assert after <= before / 2, (before, after)
    written = json.loads((tmp_path / "target" / "manifest.json").read_text())
    general = [row for split in ("real_authors", "world_facts") for row in TofuData(str(small_world)).load(split)]
    assert written["status"] == "complete" and written["rows"] == len(rows) + len(general) == 200 + 40
    assert written["training_splits"] == ["full", "real_authors", "world_facts"]  # tiny models learn general facts
    for key in ("data_fingerprint", "seed", "versions", "wall_seconds", "peak_memory_mb", "tokens_per_second"):
        assert written[key] == manifest[key]
    assert written["tokens_per_second"] > 0 and written["peak_memory_mb"] > 0
    assert (tmp_path / "target" / "model.safetensors").is_file()
    assert not list((tmp_path / "target").glob("*.bin"))
    assert not (tmp_path / "target" / "checkpoints").exists()


def test_general_knowledge_can_be_switched_off(small_world, tmp_path):
    recipe = replace(quick_recipe(max_steps=1), general_knowledge=False)
    manifest = finetune("tiny", str(small_world), "retain90", str(tmp_path / "r"), recipe)
    assert manifest["training_splits"] == ["retain90"] and manifest["rows"] == 180


def test_lora_finetune_merges_into_a_plain_model(small_world, tmp_path):
    recipe = replace(quick_recipe(max_steps=3), lora=True, lora_rank=4)
    manifest = finetune("tiny", str(small_world), "retain90", str(tmp_path / "retain"), recipe)
    weights = load_file(str(tmp_path / "retain" / "model.safetensors"))
    assert not any("lora" in name for name in weights)
    assert manifest["parameters"]["trainable"] < manifest["parameters"]["total"] / 5
    load_model(str(tmp_path / "retain"))


def test_resume_reaches_the_same_weights(small_world, tmp_path):
    recipe = quick_recipe(max_steps=6, checkpoint_every=3)
    finetune("tiny", str(small_world), "forget10", str(tmp_path / "straight"), recipe)
    # an interrupted run: stop right after the step-3 checkpoint, then resume to the end
    import alter.training.loop as loop

    original_save = loop.save_checkpoint

    def save_then_die(*args, **kwargs):
        original_save(*args, **kwargs)
        raise KeyboardInterrupt

    loop.save_checkpoint = save_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            finetune("tiny", str(small_world), "forget10", str(tmp_path / "resumed"), recipe)
    finally:
        loop.save_checkpoint = original_save
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    finetune("tiny", str(small_world), "forget10", str(tmp_path / "resumed"), recipe, resume=True)
    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    assert all((straight[k] == resumed[k]).all() for k in straight)
