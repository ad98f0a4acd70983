"""Greedy generation drops finished rows from its batch; its tokens must equal transformers' greedy `generate`."""

import numpy as np
import pytest
import torch

from alter.adapters.gates import NameGate
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


ROUTERS = ("content", "names", "layer", "shared", "none")


def calibrated_adapter(random_alter_adapter, model, router, prompts):
    """A random adapter whose content gate's detectors each fire on about 5% of tokens, so it switches on part-way
    through some sequences (prompt or generated) and never in others ("content+parts": two detectors per head); the
    'names' router's name ends at a chunk boundary of generation ("names+partial": a name of three tokens that switches
    the heads on from its first, and on for good only if written whole)."""
    adapter = random_alter_adapter(model, seed=0, router=router.split("+")[0], rank=4,
                                   adapt_below_gate=router == "content+below",
                                   gate_parts=2 if router == "content+parts" else 1)
    if router == "names":  # a "name" that the first prompt completes with the first token decoded after it
        with torch.no_grad():
            first = int(model(input_ids=torch.tensor([prompts[0]])).logits[0, -1].argmax())
        adapter.config.name_patterns = [[prompts[0][-1], first]]
        adapter.names = NameGate(adapter.config.name_patterns, [1], adapter.config.requests)
    if router == "names+partial":
        with torch.no_grad():
            first = int(model(input_ids=torch.tensor([prompts[0]])).logits[0, -1].argmax())
        adapter.config.name_patterns, adapter.config.name_partial = [[prompts[0][-1], first, first]], [1]
        adapter.names = NameGate(adapter.config.name_patterns, [1], adapter.config.requests, [1])
    if router.startswith("content"):
        with torch.no_grad(), adapter.disabled():
            hidden = torch.cat([model(input_ids=torch.tensor([p]), output_hidden_states=True)
                                .hidden_states[adapter.gate_layer][0] for p in prompts])
            scores = adapter.gate.scores(hidden[None], None)[0]
            adapter.gate.detector.bias -= torch.stack([threshold_between_scores(column, 0.95) for column in scores.T])
    return adapter


def threshold_between_scores(scores: torch.Tensor, share_below: float, margin: float = 1e-3) -> torch.Tensor:
    """A threshold near the `share_below` quantile of the scores, in the first gap above it wider than `margin`: no
    state then sits on the threshold, where rounding differences between two passes over the same tokens (one with a
    KV cache, one without) would decide whether the gate fires."""
    ordered = scores.sort().values
    gaps = (ordered.diff() > margin) & (ordered[:-1] >= torch.quantile(scores, share_below))
    first = int(gaps.nonzero()[0])
    return (ordered[first] + ordered[first + 1]) / 2


@pytest.mark.parametrize("router", (*ROUTERS, "content+turns", "content+below", "content+parts", "names+partial"))
def test_teacher_forced_scoring_of_a_generation_equals_the_log_probabilities_seen_while_generating(
        router, tiny_runs, small_world, random_alter_adapter):
    """One routing policy: every decoded token is routed as scoring routes it in the whole sequence (with a turn
    marker, also where a decoded token opens a turn)."""
    from transformers import DynamicCache

    from alter.data.formatting import EncodedQA
    from alter.evaluation.scoring import score_answers

    model, tokenizer = load_model(str(tiny_runs / "target"))
    prompts = questions(tokenizer, small_world, count=6)
    adapter = calibrated_adapter(random_alter_adapter, model, router, prompts)
    if router == "content+turns":  # no chat template here: the commonest token of the answers opens a "turn"
        answers = [tokenizer(row["answer"], add_special_tokens=False)["input_ids"]
                   for row in TofuData(str(small_world)).load("full")[:6]]
        adapter.config.turn_marker = [int(torch.tensor(sum(answers, [])).mode().values)]
    items, seen = [], []
    with torch.no_grad():
        for prompt in prompts:
            ids, cache, tokens, logprobs = torch.tensor([prompt]), DynamicCache(config=model.config), [], []
            step = {"input_ids": ids}
            for _ in range(12):
                logits = model(**step, attention_mask=torch.ones(1, len(prompt) + len(tokens), dtype=torch.long),
                               cache=cache, use_cache=True).logits[0, -1]
                token = int(logits.argmax())
                logprobs.append(float(torch.log_softmax(logits.float(), -1)[token]))
                tokens.append(token)
                step = {"input_ids": torch.tensor([[token]])}
            items.append(EncodedQA(prompt + tokens, len(prompt)))
            seen.append(logprobs)
    scored = score_answers(model, items, tokenizer.pad_token_id, precision="fp32")
    for score, logprobs in zip(scored, seen):
        np.testing.assert_allclose(score.logprobs, logprobs, atol=2e-4)
    routes = {r for s in scored for r in s.route.tolist()}
    assert routes != {0} and (router == "none" or 0 in routes or len(routes) > 1)
    if router == "content+turns":  # some decoded token restarted the gate
        assert any(adapter.config.turn_marker[0] in item.answer_ids for item in items)


@pytest.mark.parametrize("router", (*ROUTERS, "content+below", "content+parts", "names+partial"))
def test_an_alter_adapter_generates_the_same_after_rows_leave(router, tiny_runs, small_world, random_alter_adapter):
    """The adapter carries each row's routing state from one decoding step to the next, and drops it with the row."""
    model, tokenizer = load_model(str(tiny_runs / "target"))
    runtime = calibrated_adapter(random_alter_adapter, model, router, questions(tokenizer, small_world))
    prompts = questions(tokenizer, small_world)
    ours = greedy_generate(model, tokenizer, prompts, max_new_tokens=48, batch_size=len(prompts))
    assert runtime.slot.routing is None
    assert ours == reference_generate(model, tokenizer, prompts, 48)
    assert len({len(text) for text in ours}) > 1
