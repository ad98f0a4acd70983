"""Greedy generation drops finished rows from its batch; its tokens must equal transformers' greedy `generate`."""

import pytest
import torch

from alter.data.batching import pad_sequences
from alter.data.formatting import encode_prompt
from alter.data.tofu import TofuData
from alter.evaluation.generation import greedy_generate
from alter.models import load_model


def reference_generate(model, tokenizer, prompts, max_new_tokens):
    """transformers' greedy search, one left-padded batch: finished rows stay in the batch (padded after EOS)."""
    input_ids, attention_mask = pad_sequences(prompts, tokenizer.pad_token_id, "left")
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                             do_sample=False, num_beams=1, pad_token_id=tokenizer.pad_token_id)
    return [tokenizer.decode(row[input_ids.shape[1]:], skip_special_tokens=True).strip() for row in out]


def questions(tokenizer, small_world, count=12):
    rows = TofuData(str(small_world)).load("full")[:count]
    return [encode_prompt(tokenizer, row["question"]) for row in rows]


def test_rows_leave_the_batch_at_eos_with_the_tokens_of_generate(tiny_runs, small_world):
    model, tokenizer = load_model(str(tiny_runs / "target"))
    prompts = questions(tokenizer, small_world)
    assert len({len(p) for p in prompts}) > 1  # left padding is exercised
    ours = greedy_generate(model, tokenizer, prompts, max_new_tokens=48, batch_size=len(prompts))
    assert ours == reference_generate(model, tokenizer, prompts, 48)
    lengths = {len(tokenizer(text)["input_ids"]) for text in ours}
    assert len(lengths) > 1 and min(lengths) < 40  # some rows ended early and left the batch


@pytest.mark.parametrize("router", ["layer", "shared"])
def test_an_alter_adapter_generates_the_same_after_rows_leave(router, tiny_runs, small_world, random_alter_adapter):
    """The runtime carries each row's entropy class (and shared gate) from one decoding step to the next."""
    model, tokenizer = load_model(str(tiny_runs / "target"))
    runtime = random_alter_adapter(model, seed=0, router=router, rank=4)
    prompts = questions(tokenizer, small_world)
    ours = greedy_generate(model, tokenizer, prompts, max_new_tokens=48, batch_size=len(prompts))
    assert runtime.slot.routing is None
    assert ours == reference_generate(model, tokenizer, prompts, 48)
    assert len({len(text) for text in ours}) > 1
