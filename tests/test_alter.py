"""ALTER: entropies, the adapter's isolation and routing, the gates and their fits, save/load, short training runs."""

import itertools

import numpy as np
import pytest
import torch

from alter.adapters.config import AlterConfig
from alter.adapters.gates import ContentGate, SharedRouter
from alter.adapters.layer import AlterLayer, Routing, RoutingSlot, route_weights
from alter.adapters.model import AlterModel
from alter.data.batching import WIDTH_MULTIPLE, UnlearnBatches, collate
from alter.data.contexts import encode_variants
from alter.data.formatting import IGNORE_INDEX, Context, encode_qa
from alter.data.sources import from_tofu
from alter.data.splits import FEW_SHOT_TURNS
from alter.data.subjects import (INVENTED_FIRST_NAMES, INVENTED_SURNAMES, forget_subject_names, name_swapped_forget_rows,
                                 renamed_forget_rows, subject_names)
from alter.data.tofu import TofuData
from alter.entropy import POSITIONS_PER_CHUNK, EntropySettings, shannon_entropy, token_entropy, tsallis_entropy
from alter.errors import UserError
from alter.evaluation.scoring import score_answers
from alter.evaluation.suites.tofu import _few_shot_rows
from alter.evaluation.suites.tofu import splits as tofu_splits
from alter.methods import get_method
from alter.methods.alter.gate_fit import (_weigh_hard_negatives, content_gate_targets, fit_content_gate,
                                         fit_shared_router)
from alter.methods.alter.generic import GenericTargets, aligned_positions, lowered_by_the_name
from alter.methods.alter.objective import (ALTERObjective, joined_batch, next_labels, predicts_answer, row_spans,
                                          without_answer_token)
from alter.methods.alter.params import ALTERParams, paper_overrides
from alter.methods.alter.subdomains import agreement_with_groups, subject_subdomains
from alter.methods.base import LoraChoice, Setup
from alter.methods.losses import masked_kl
from alter.models import load_model
from alter.training.recipe import build_recipe

ROUTERS = ("content", "names", "layer", "shared", "none")


# --- entropy ------------------------------------------------------------------------------------------------------


def test_tsallis_and_shannon_against_numpy():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(50), size=8)
    logits = torch.tensor(np.log(probs), dtype=torch.float32)
    for q in (0.5, 1.2, 1.5, 2.0):
        expected = (1 - (probs ** q).sum(-1)) / (q - 1)
        np.testing.assert_allclose(tsallis_entropy(logits, q).numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(shannon_entropy(logits).numpy(), -(probs * np.log(probs)).sum(-1), rtol=1e-4)
    np.testing.assert_allclose(tsallis_entropy(logits, 1.0001).numpy(), shannon_entropy(logits).numpy(), rtol=1e-3)
    np.testing.assert_allclose(tsallis_entropy(logits, 1.0).numpy(), shannon_entropy(logits).numpy(), rtol=1e-6)


def test_token_entropy_in_chunks_equals_the_whole_batch_at_once():
    logits = torch.randn(3, POSITIONS_PER_CHUNK, 7, generator=torch.Generator().manual_seed(0))  # 3 chunks
    torch.testing.assert_close(token_entropy(logits, "tsallis", 1.5), tsallis_entropy(logits, 1.5))
    torch.testing.assert_close(token_entropy(logits[:, :5], "shannon"), shannon_entropy(logits[:, :5]))
    assert token_entropy(logits[:, :0]).shape == (3, 0)
    with pytest.raises(ValueError, match="renyi"):
        token_entropy(logits, "renyi")


def test_entropy_limits_one_hot_and_uniform():
    one_hot = torch.full((1, 10), -1e4)
    one_hot[0, 3] = 0.0
    assert tsallis_entropy(one_hot, 1.5).item() == pytest.approx(0.0, abs=1e-6)
    assert shannon_entropy(one_hot).item() == pytest.approx(0.0, abs=1e-4)
    uniform = torch.zeros(1, 10)
    assert shannon_entropy(uniform).item() == pytest.approx(np.log(10), rel=1e-6)
    assert tsallis_entropy(uniform, 1.5).item() == pytest.approx((1 - 10 ** (1 - 1.5)) / 0.5, rel=1e-6)
    settings = EntropySettings(threshold=0.5)
    assert settings.is_high(torch.stack([uniform[0], one_hot[0]])).tolist() == [True, False]
    assert EntropySettings(guidance=False).is_high(uniform).tolist() == [False]


# --- one adapted layer: isolation by token masks --------------------------------------------------------------------


def layer_with_random_heads(heads=2, router="content"):
    torch.manual_seed(0)
    config = AlterConfig(rank=4, forget_heads=heads, router=router, top_k_high=min(3, heads + 1))
    slot = RoutingSlot()
    layer = AlterLayer(torch.nn.Linear(6, 5).requires_grad_(False), config, slot)
    with torch.no_grad():
        layer.retain_B.normal_()
        layer.forget_B.normal_()
        if layer.router is not None:
            layer.router.normal_()
    return layer, slot


def gradients(layer, slot, routing, loss_positions):
    layer.zero_grad()
    slot.routing = routing
    x = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(1))
    y = layer(x)
    (y * loss_positions[..., None]).sum().backward()
    return {name: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for name, p in layer.named_parameters()}


def training_routing(**extra):
    # row 0 belongs to sub-domain 1, row 1 to sub-domain 2; positions 0-1 are high-entropy, 2-3 low-entropy
    high = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    head = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 2]])
    weights = torch.nn.functional.one_hot(head, 3)[..., 1:].float()
    return Routing(high=high, weights=weights, a_grad=high, retain_grad=torch.zeros_like(high), head_grad=head, **extra)


def test_forget_head_gets_no_gradient_from_another_sub_domain_or_high_entropy_tokens():
    layer, slot = layer_with_random_heads()
    row1_low = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1]], dtype=torch.float32)
    grads = gradients(layer, slot, training_routing(), row1_low)
    assert torch.count_nonzero(grads["forget_B"][0]) == 0  # head 1 never sees sub-domain 2
    assert torch.count_nonzero(grads["forget_B"][1]) > 0
    high_only = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.float32)
    grads = gradients(layer, slot, training_routing(), high_only)
    assert torch.count_nonzero(grads["forget_B"]) == 0
    assert torch.count_nonzero(grads["lora_A"]) > 0


def test_a_head_applied_where_it_may_not_learn_is_read_but_not_trained():
    layer, slot = layer_with_random_heads()
    routing = training_routing()
    routing.weights = torch.ones(2, 4, 2)  # both heads act everywhere ...
    routing.head_grad = torch.zeros(2, 4, dtype=torch.long)  # ... but none may learn
    grads = gradients(layer, slot, routing, torch.ones(2, 4))
    assert torch.count_nonzero(grads["forget_B"]) == 0
    routing.head_grad = torch.full((2, 4), -1)  # every head may learn ('none' router, retain rows)
    grads = gradients(layer, slot, routing, torch.ones(2, 4))
    assert torch.count_nonzero(grads["forget_B"][0]) > 0 and torch.count_nonzero(grads["forget_B"][1]) > 0


def test_shared_a_gets_no_gradient_from_low_entropy_tokens_and_retain_head_only_where_marked():
    layer, slot = layer_with_random_heads()
    low_only = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.float32)
    grads = gradients(layer, slot, training_routing(), low_only)
    assert torch.count_nonzero(grads["lora_A"]) == 0
    assert torch.count_nonzero(grads["retain_B"]) == 0  # retain_grad is off for every token here
    assert layer.base.weight.grad is None


def per_head_reference(layer, x, routing):
    """The training delta written head by head at full width: each head's output through its own weights where it may
    learn, through a detached copy elsewhere (what the layer computes in two rank-sized matmuls)."""
    A, scale = layer.lora_A, layer.config.scale
    h = torch.where(routing.a_grad[..., None], x @ A.T, (x @ A.T).detach())
    learns = [routing.retain_grad] + [(routing.head_grad == d + 1) | (routing.head_grad == -1)
                                      for d in range(layer.config.forget_heads)]
    heads = [layer.retain_B] + list(layer.forget_B)
    weights = [torch.ones_like(routing.weights[..., 0])] + list(routing.weights.unbind(-1))
    delta = sum(w[..., None] * torch.where(learn[..., None], h @ B.T, h @ B.detach().T)
                for w, learn, B in zip(weights, learns, heads))
    return layer.base(x) + scale * delta


def test_the_training_delta_equals_a_head_by_head_reference_in_value_and_every_gradient():
    layer, slot = layer_with_random_heads(heads=3)
    generator = torch.Generator().manual_seed(3)
    shape = (3, 5)
    routing = Routing(high=torch.zeros(shape, dtype=torch.bool),
                      weights=torch.rand(*shape, 3, generator=generator) * (torch.rand(*shape, 3, generator=generator) > 0.3),
                      a_grad=torch.rand(shape, generator=generator) > 0.5,
                      retain_grad=torch.rand(shape, generator=generator) > 0.5,
                      head_grad=torch.randint(-1, 4, shape, generator=generator))
    x = torch.randn(*shape, 6, generator=generator)
    upstream = torch.randn(*shape, 5, generator=generator)
    results = []
    for compute in (lambda: layer(x), lambda: per_head_reference(layer, x, routing)):
        layer.zero_grad()
        slot.routing = routing
        y = compute()
        (y * upstream).sum().backward()
        results.append((y.detach(), {name: p.grad.clone() for name, p in layer.named_parameters() if p.grad is not None}))
    (y, grads), (y_ref, grads_ref) = results
    torch.testing.assert_close(y, y_ref)
    assert grads.keys() == grads_ref.keys() == {"lora_A", "retain_B", "forget_B"}
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name])
    assert all(torch.count_nonzero(g) > 0 for g in grads.values())  # every kind learns somewhere, so masks matter


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_inference_keeps_its_cast_weights_only_until_a_parameter_changes(precision):
    from alter.models.precision import autocast

    layer, slot = layer_with_random_heads(heads=2)
    x = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(1))
    weights = torch.rand(2, 4, 2, generator=torch.Generator().manual_seed(2))

    def infer(with_grad: bool):
        slot.routing = Routing(high=torch.zeros(2, 4, dtype=torch.bool), weights=weights)
        with torch.set_grad_enabled(with_grad), autocast(precision, "cpu"):
            return layer(x).detach().float()

    def by_hand():
        heads = layer.retain_B + torch.einsum("bsd,dor->bsor", weights, layer.forget_B)
        return layer.base(x) + layer.config.scale * torch.einsum("bsor,rn,bsn->bso", heads, layer.lora_A, x)

    tolerance = {"fp32": 1e-6, "bf16": 2e-2}[precision]  # of the largest output; bf16 keeps 8 bits of mantissa
    for change in (None, lambda: layer.forget_B.add_(0.5), lambda: layer.retain_B.mul_(-1),
                   lambda: layer.lora_A.copy_(torch.randn_like(layer.lora_A))):
        if change is not None:
            with torch.no_grad():
                change()
        kept = infer(with_grad=False)
        assert torch.equal(kept, infer(with_grad=False))
        assert torch.equal(kept, infer(with_grad=True))
        reference = by_hand().detach()
        assert (kept - reference).abs().max() <= tolerance * reference.abs().max()


def test_layer_router_learns_from_the_loss_only_where_its_softmax_weights_frozen_heads():
    layer, slot = layer_with_random_heads(router="layer")
    marked = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)

    def routing():
        off = torch.zeros(2, 4, dtype=torch.bool)
        return Routing(high=off, weights=torch.zeros(2, 4, 2), a_grad=off, retain_grad=off,
                       head_grad=torch.zeros(2, 4, dtype=torch.long), router_tokens=marked)

    grads = gradients(layer, slot, routing(), (~marked).float())
    assert torch.count_nonzero(grads["router"]) == 0
    grads = gradients(layer, slot, routing(), marked.float())
    assert torch.count_nonzero(grads["router"]) > 0
    assert torch.count_nonzero(grads["forget_B"]) == 0  # the heads are read, never trained, through the softmax


def test_router_temperatures_top_k_and_the_null_output():
    config = AlterConfig(forget_heads=4, router="layer", top_k_high=3, temperature_high=0.8, temperature_low=0.01)
    logits = torch.tensor([[[0.1, 0.5, 0.3, 0.2, 0.4], [0.1, 0.5, 0.3, 0.2, 0.4]]])
    weights = route_weights(logits, torch.tensor([[True, False]]), config)
    soft = np.exp(logits[0, 0].numpy() / 0.8)
    soft /= soft.sum()
    top3 = np.argsort(-soft)[:3]
    expected = np.zeros(5)
    expected[top3] = soft[top3] / soft[top3].sum()
    np.testing.assert_allclose(weights[0, 0].numpy(), expected[1:], rtol=1e-5)  # column 0 is 'no forget head'
    assert weights[0, 1].tolist() == [1.0, 0.0, 0.0, 0.0]  # low-entropy: the single top output
    none_wins = route_weights(torch.tensor([[[3.0, 0.5, 0.3, 0.2, 0.4]]]), torch.tensor([[False]]), config)
    assert none_wins.sum().item() == 0.0  # the null output takes the token: no forget head acts
    literal = AlterConfig(forget_heads=4, router="layer", null_output=False)
    assert route_weights(logits[..., 1:], torch.tensor([[False, False]]), literal)[0, 0].tolist() == [1, 0, 0, 0]


def test_config_validation():
    with pytest.raises(ValueError, match="router"):
        AlterConfig(router="global")
    for router, patterns in (("names", []), ("content", [[5, 6]])):  # names need patterns; no other router reads them
        with pytest.raises(ValueError, match="name_patterns"):
            AlterConfig(router=router, name_patterns=patterns)
    for requests in ([1], [1, 3]):  # one request per pattern, and every request with both names and heads
        with pytest.raises(ValueError, match="name_requests"):
            AlterConfig(router="names", forget_heads=2, head_requests=[1, 2], name_patterns=[[5], [6]],
                        name_requests=requests)
    for partial in ([1, 1], [2]):  # one length per pattern, each shorter than its pattern
        with pytest.raises(ValueError, match="name_partial"):
            AlterConfig(router="names", name_patterns=[[5, 6]], name_partial=partial)
    with pytest.raises(ValueError, match="top_k_high"):
        AlterConfig(forget_heads=1, router="layer", top_k_high=3)
    assert AlterConfig.from_dict(AlterConfig(forget_heads=3).to_dict()) == AlterConfig(forget_heads=3)
    for bad, field in (({"gate_fit_lr": 0.0}, "gate_fit_lr"), ({"gate_fit_steps": 0}, "gate_fit_steps"),
                       ({"gate_chats": "all"}, "gate_chats"), ({"gate_chat_turns": 1}, "gate_chat_turns"),
                       ({"gate_fit_draws": 0}, "gate_fit_draws"),
                       ({"gate_calibration": "items"}, "gate_calibration"),
                       ({"gate_hard_negative_refits": -1}, "gate_hard_negative_refits"),
                       ({"gate_parts": 0}, "gate_parts"), ({"gate_parts": 2, "router": "shared"}, "gate_parts"),
                       ({"gate_parts": 2, "gate_fit_draws": 3, "router": "content"}, "gate_fit_draws"),
                       ({"gate_swap_pool": "world"}, "gate_swap_pool"), ({"subdomains": "authors"}, "subdomains"),
                       ({"gate_swaps_per_row": 0}, "gate_swaps_per_row"),
                       ({"gate_swap_span": "answer"}, "gate_swap_span"),
                       ({"name_partial": True, "router": "content"}, "name_partial")):
        with pytest.raises(ValueError, match=field):
            ALTERParams(**bad)


# --- the names gate ----------------------------------------------------------------------------------------------


def test_the_names_gate_is_on_from_the_token_that_completes_a_name_however_the_sequence_is_chunked():
    """Hand case: name (5, 6) of request 1 (head 0) and name (7,) of request 2 (heads 1 and 2); a name part alone (5
    without 6) and padding never switch a head on, and a name switches on its own request's heads only."""
    from alter.adapters.gates import NameGate

    gate = NameGate([[5, 6], [7]], [1, 2], [1, 2, 2])
    ids = torch.tensor([[1, 5, 6, 2, 3], [5, 1, 6, 7, 2], [5, 5, 1, 6, 2], [0, 0, 5, 6, 2]])
    mask = torch.tensor([[1] * 5, [1] * 5, [1] * 5, [0, 0, 1, 1, 1]])
    first = torch.tensor([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    second = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    expected = torch.stack([first, second, second], dim=-1)
    on, _ = gate.on(ids, mask, None)
    assert torch.equal(on, expected)
    for cut in range(1, 5):  # generation: the prompt, then one token at a time, the state carried between chunks
        first, carry = gate.on(ids[:, :cut], mask[:, :cut], None)
        rest = [first]
        for position in range(cut, 5):
            step, carry = gate.on(ids[:, position : position + 1], mask[:, position : position + 1], carry)
            rest.append(step)
        assert torch.equal(torch.cat(rest, dim=1), expected)


def test_a_partly_written_name_switches_its_heads_on_only_while_the_text_writes_it():
    """Hand case: name (5, 6, 7) from its first token on, and from its first two; the heads stay on for good only once
    the whole name is written; chunked as in generation."""
    from alter.adapters.gates import NameGate

    ids = torch.tensor([[1, 5, 6, 7, 2], [5, 6, 2, 5, 3], [5, 1, 1, 1, 1]])
    for shortest, expected in ((1, [[0, 1, 1, 1, 1], [1, 1, 0, 1, 0], [1, 0, 0, 0, 0]]),
                               (2, [[0, 0, 1, 1, 1], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]])):
        gate = NameGate([[5, 6, 7]], [1], [1], [shortest])
        expected = torch.tensor(expected, dtype=torch.bool)[..., None]
        assert torch.equal(gate.on(ids, None, None)[0], expected)
        for cut in range(1, 5):
            parts, carry = [], None
            for start, end in ((0, cut), *((p, p + 1) for p in range(cut, 5))):
                step, carry = gate.on(ids[:, start:end], None, carry)
                parts.append(step)
            assert torch.equal(torch.cat(parts, dim=1), expected)


def test_the_names_are_token_ids_after_a_space_and_at_a_texts_start_and_are_required(tiny_runs):
    from types import SimpleNamespace

    from alter.methods.alter import _name_patterns

    _, tokenizer = fresh_target(tiny_runs)
    patterns, partial = _name_patterns(SimpleNamespace(subjects=["Ana Lee"], tokenizer=tokenizer))
    assert [tokenizer.decode(pattern) for pattern in patterns] == [" Ana Lee", "Ana Lee"]
    assert [tokenizer.decode(p[:k]) for p, k in zip(patterns, partial)] == [" Ana", "Ana"]  # the first word
    with pytest.raises(UserError, match="params.router: 'names' needs forget rows that name their subjects"):
        _name_patterns(SimpleNamespace(subjects=[], tokenizer=tokenizer))


def test_the_default_router_reads_names_where_the_rows_name_subjects_and_the_content_gate_elsewhere():
    from alter.methods.alter import resolved_router

    assert ALTERParams().router == "auto"
    assert resolved_router(ALTERParams(), ["Ana Lee"]).router == "names"
    assert resolved_router(ALTERParams(), []).router == "content"
    with pytest.raises(UserError, match="params.name_partial: needs the names router"):  # never silently ignored
        resolved_router(ALTERParams(name_partial=True), [])
    assert resolved_router(ALTERParams(router="content"), ["Ana Lee"]).router == "content"


# --- the content gate --------------------------------------------------------------------------------------------


def test_content_gate_is_a_running_max_that_padding_never_moves_and_generation_continues():
    gate = ContentGate(2, 1)
    with torch.no_grad():
        gate.detector.weight.copy_(torch.tensor([[1.0, 0.0]]))
        gate.detector.bias.fill_(-0.5)
    hidden = torch.tensor([[[0.0, 0], [1.0, 0], [0.0, 0], [0.0, 0]], [[2.0, 0], [0.0, 0], [0.0, 0], [0.0, 0]]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])  # row 1 is left-padded: its trigger sits on a pad
    pooled = ContentGate.running_max(gate.scores(hidden, mask), None)
    assert ContentGate.weights(pooled)[..., 0].tolist() == [[0, 1, 1, 1], [0, 0, 0, 0]]
    first, rest = ContentGate.running_max(gate.scores(hidden[:, :2], mask[:, :2]), None), None
    rest = ContentGate.running_max(gate.scores(hidden[:, 2:], mask[:, 2:]), first[:, -1])
    assert torch.equal(torch.cat([first, rest], 1), pooled)  # chunk by chunk = all at once


def test_with_turn_starts_the_running_max_restarts_at_each_user_turn():
    """Scores of one head at 7 positions, user turns opening at positions 2 and 5: the max of each position's own turn
    so far, by hand; chunk by chunk (the carry) as all at once; a marker of two tokens found where it starts."""
    scores = torch.tensor([[[0.5], [-1.0], [-2.0], [0.3], [-5.0], [-0.25], [0.1]]])
    starts = torch.tensor([[False, False, True, False, False, True, False]])
    pooled = ContentGate.running_max(scores, None, starts)
    assert pooled[0, :, 0].tolist() == pytest.approx([0.5, 0.5, -2.0, 0.3, 0.3, -0.25, 0.1])
    assert ContentGate.running_max(scores, None, torch.zeros_like(starts)).equal(ContentGate.running_max(scores, None))
    for cut in range(1, 7):
        first = ContentGate.running_max(scores[:, :cut], None, starts[:, :cut])
        rest = ContentGate.running_max(scores[:, cut:], first[:, -1], starts[:, cut:])
        assert torch.cat([first, rest], 1)[0, :, 0].tolist() == pytest.approx(pooled[0, :, 0].tolist())
    ids = torch.tensor([[7, 8, 3, 7, 8, 7], [8, 7, 8, 8, 7, 9]])
    assert ContentGate.turn_starts(ids, [7, 8]).int().tolist() == [[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0]]
    assert not ContentGate.turn_starts(ids[:, :1], [7, 8]).any()  # a chunk shorter than the marker


def test_the_user_turn_marker_is_what_opens_each_user_turn_of_an_encoded_chat(tiny_runs):
    """SmolLM2's template: '<|im_start|>user', once per user turn of a chat the suite encodes; no template: none."""
    from transformers import AutoTokenizer

    from alter.data.formatting import user_turn_marker
    from alter.models.smollm2 import smollm2_folder

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
    marker = user_turn_marker(tokenizer)
    assert tokenizer.decode(marker) == "<|im_start|>user"
    chat = encode_qa(tokenizer, "Q3?", "A3.", Context(history=(("Q1?", "A1."), ("Q2?", "A2."))))
    starts = ContentGate.turn_starts(torch.tensor([chat.input_ids]), marker)[0]
    assert int(starts.sum()) == 3 and tokenizer.decode(chat.input_ids[int(starts.nonzero()[-1]):]).startswith(
        "<|im_start|>user\nQ3?")
    assert user_turn_marker(fresh_target(tiny_runs)[1]) == []


def test_head_mixes_weigh_the_heads_that_are_on_as_documented():
    """Running maxima of three heads at four positions (-inf: padding), their weights by hand per mix."""
    pooled = torch.tensor([[-float("inf")] * 3, [-1.0, -2.0, -0.5], [0.5, -1.0, 2.0], [0.5, 3.0, 3.0]])
    assert ContentGate.weights(pooled, "sum").tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 1], [1, 1, 1]]
    assert torch.allclose(ContentGate.weights(pooled, "mean"),
                          torch.tensor([[0, 0, 0], [0, 0, 0], [0.5, 0, 0.5], [1 / 3, 1 / 3, 1 / 3]]))
    # the highest score alone; a tie goes to the first head; no head when none is above 0
    assert ContentGate.weights(pooled, "strongest").tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0]]
    for mix in ("mean", "strongest"):  # one head on: every mix gives it weight 1
        assert ContentGate.weights(pooled[:, :1], mix).tolist() == [[0], [0], [1], [1]]


def test_head_mix_needs_the_content_router():
    with pytest.raises(ValueError, match="head_mix"):
        AlterConfig(router="layer", head_mix="mean")
    with pytest.raises(ValueError, match="params.head_mix"):
        ALTERParams(router="shared", head_mix="strongest")
    with pytest.raises(ValueError, match="params.head_mix"):
        ALTERParams(head_mix="max")


def test_content_gate_fit_finds_the_token_that_names_the_subject():
    """Toy: feature 0 marks a mention of subject A, feature 1 of subject B, feature 2 is noise everywhere. Forget items
    of sub-domain 0 mention A in the prompt, of sub-domain 1 B; retain items mention neither; the fitted gate fires for
    each item's own head from the mention on and never on retain items (another head may fire on a forget item)."""
    rng = np.random.default_rng(0)

    def item(mention: int | None, at: int, length: int = 8):
        features = np.zeros((length, 3), dtype=np.float32)
        features[:, 2] = rng.normal(size=length)
        if mention is not None:
            features[at, mention] = 1.0
        return features

    forget = [item(0, 2) for _ in range(6)] + [item(1, 1) for _ in range(6)]
    domains = np.array([0] * 6 + [1] * 6)
    retain = [item(None, 0) for _ in range(24)]
    gate = ContentGate(3, 2)
    facts = fit_content_gate(gate, forget, [4] * 12, domains, retain, seed=0)
    assert facts["forget_answer_recall"] == 1.0 and facts["retain_fire_rate"] == 0.0
    fires = ContentGate.weights(ContentGate.running_max(gate.scores(torch.as_tensor(np.stack(forget[:1] + [item(1, 5)])),
                                                                    None), None))
    assert fires[0, :, 0].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert fires[1, :, 1].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    retain_fires = ContentGate.weights(ContentGate.running_max(gate.scores(torch.as_tensor(np.stack(retain)), None),
                                                               None))
    assert retain_fires.sum() == 0


def test_a_gate_of_two_parts_is_on_where_both_detectors_have_fired_so_far():
    """Two heads, two parts each (outputs part-major): by hand, the least of each head's two running maxima; chunk by
    chunk (a carry of all four maxima) as all at once; lowering every part's bias by s lowers the combination by s."""
    gate = ContentGate(2, 2, parts=2)
    with torch.no_grad():  # head 0: feature 0 AND feature 1; head 1: feature 0 twice (as one detector)
        gate.detector.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
        gate.detector.bias.fill_(-0.5)
    hidden = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    pooled = gate.pooled_scores(hidden)
    assert pooled.shape == (1, 5, 4)
    combined = gate.combined(pooled)
    assert combined[0].tolist() == [[-0.5, -0.5], [-0.5, 0.5], [-0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]
    assert ContentGate.weights(combined)[0].tolist() == [[0, 0], [0, 1], [0, 1], [1, 1], [1, 1]]
    for cut in range(1, 5):
        first = gate.pooled_scores(hidden[:, :cut])
        rest = gate.pooled_scores(hidden[:, cut:], carry=first[:, -1])
        assert torch.equal(torch.cat([first, rest], 1), pooled)
    with torch.no_grad():
        gate.detector.bias.sub_(torch.tensor([0.25, 0.75]).repeat(2))
    assert torch.allclose(gate.combined(gate.pooled_scores(hidden)), combined - torch.tensor([0.25, 0.75]))
    assert torch.equal(ContentGate(2, 3).combined(pooled[..., :3]), pooled[..., :3])  # one part: the running max


def test_a_gate_of_two_parts_fits_a_subject_named_by_two_tokens_that_one_detector_cannot():
    """Toy: a forget subject is named by a first-name token (feature 0) and a surname token (feature 1) at different
    positions; negatives name someone who shares one of the two (first name with another surname, or the reverse).
    No single linear detector's running max can fire on both-named items and on neither kind of namesake; two parts
    per head can, and the fit finds it (recall 1, no negative fires); one part cannot."""
    rng = np.random.default_rng(0)

    def item(first: bool, surname: bool, length: int = 8):
        features = np.zeros((length, 3), dtype=np.float32)
        features[:, 2] = rng.normal(size=length) * 0.1
        features[1, 0], features[2, 1] = float(first), float(surname)
        return features

    forget = [item(True, True) for _ in range(12)]
    namesakes = [item(True, False) for _ in range(12)] + [item(False, True) for _ in range(12)]
    others = [item(False, False) for _ in range(12)]
    gates = {parts: ContentGate(3, 1, parts=parts) for parts in (1, 2)}
    facts = {parts: fit_content_gate(gate, forget, [4] * 12, np.zeros(12, int), namesakes + others, seed=0, steps=300)
             for parts, gate in gates.items()}
    assert facts[2]["forget_answer_recall"] == 1.0 and facts[2]["retain_fire_rate"] == 0.0
    assert facts[1]["forget_answer_recall"] < 1.0 or facts[1]["retain_fire_rate"] > 0.0
    two = gates[2]
    with torch.no_grad():
        on = ContentGate.weights(two.combined(two.pooled_scores(torch.as_tensor(np.stack(forget[:1] + namesakes[:1]
                                                                                          + namesakes[-1:])))))
    assert on[0, :, 0].tolist() == [0, 0, 1, 1, 1, 1, 1, 1] and on[1:].sum() == 0


def test_two_parts_per_head_need_the_content_router_and_refuse_sequential_requests():
    from alter.adapters.model import _check_sequential

    with pytest.raises(ValueError, match="gate_parts"):
        AlterConfig(router="shared", gate_parts=2)
    with pytest.raises(UserError, match="gate_parts 1"):
        _check_sequential(AlterConfig(gate_parts=2))
    _check_sequential(AlterConfig())


def test_a_calibration_that_silences_the_gate_is_recorded_and_warned_about(capsys):
    """Held-out items that name the forget subjects as the forget items do: the calibration must raise each threshold
    above all of them (fewer than 200 items, so no head may fire on any), which switches the gate off on the forget
    answers too. The facts keep the recall before and after, and the run warns. `min_recall` caps the raise."""
    from alter.methods.alter import _warn_if_gate_misses_forget

    rng = np.random.default_rng(0)

    def item(mention: int | None, length: int = 8):
        features = np.zeros((length, 3), dtype=np.float32)
        features[:, 2] = rng.normal(size=length) * 0.01
        if mention is not None:
            features[2, mention] = 1.0
        return features

    forget = [item(k % 2) for k in range(12)]
    domains = np.arange(12) % 2
    retain, look_alikes = [item(None) for _ in range(24)], [item(k % 2) for k in range(20)]
    gate = ContentGate(3, 2)
    facts = fit_content_gate(gate, forget, [4] * 12, domains, retain, seed=0, calibration=look_alikes)
    assert facts["forget_answer_recall_before_calibration"] == 1.0
    assert facts["forget_answer_recall_per_head_before_calibration"] == [1.0, 1.0]
    assert facts["forget_answer_recall"] < 0.5 and min(facts["threshold_shift"]) > 0
    assert max(facts["forget_answer_recall_per_head"]) < 0.5
    _warn_if_gate_misses_forget(facts)
    warning = capsys.readouterr().err
    assert f"is on for {facts['forget_answer_recall']:.0%} of the forget answers" in warning and "(100% before" in warning
    assert "2 of 2 forget heads" in warning
    assert "held-out retain items score as high" in warning and "gate_fit_lr" not in warning
    _warn_if_gate_misses_forget({**facts, "forget_answer_recall_per_head_before_calibration": [0.3, 0.3]})  # unfinished
    assert "gate_fit_lr" in capsys.readouterr().err
    _warn_if_gate_misses_forget({**facts, "forget_answer_recall_per_head": [0.9, 0.9]})
    assert capsys.readouterr().err == ""

    for min_recall in (0.9, 1.0):  # the raise is capped: each head stays on at that share of its forget answers
        capped_gate = ContentGate(3, 2)
        capped = fit_content_gate(capped_gate, forget, [4] * 12, domains, retain, seed=0,
                                  calibration=look_alikes, min_recall=min_recall)
        with torch.no_grad():  # read from the fitted gate itself: answer positions 3..7 of each forget item
            on = [capped_gate.pooled_scores(torch.as_tensor(f)[None])[0, 3:, d] > 0 for f, d in zip(forget, domains)]
        recall_per_head = [float(torch.cat([o for o, d in zip(on, domains) if d == head]).float().mean())
                           for head in (0, 1)]
        assert min(recall_per_head) >= min_recall
        assert capped["forget_answer_recall_per_head"] == pytest.approx(recall_per_head)
        assert all(0 < raised < uncapped for raised, uncapped in zip(capped["threshold_shift"],
                                                                      facts["threshold_shift"]))

    one_look_alike = [item(0) for _ in range(20)] + [item(None) for _ in range(20)]  # names only subject 0
    facts = fit_content_gate(ContentGate(3, 2), forget, [4] * 12, domains, retain, seed=0, calibration=one_look_alike)
    head0, head1 = facts["forget_answer_recall_per_head"]
    assert head0 < 0.5 and head1 == 1.0 and facts["forget_answer_recall"] >= 0.5  # the overall share hides head 0
    _warn_if_gate_misses_forget(facts)
    warning = capsys.readouterr().err
    assert f"head 0 for {head0:.0%} of its sub-domain's (100% before" in warning and "1 of 2 forget heads" in warning


def test_the_gate_fit_in_length_buckets_equals_one_padded_batch():
    """The fit runs over items of similar length a bucket at a time (64 items each); a reference written here pads all
    150 items (3-40 tokens) to one width and takes each Adam step on the whole batch: the same detector and facts."""
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    lengths = rng.integers(3, 41, size=150)
    arrays = [rng.normal(size=(n, 5)).astype(np.float32) + (k < 50) * np.eye(5, dtype=np.float32)[k % 2]
              for k, n in enumerate(lengths)]
    forget, retain = arrays[:50], arrays[50:]
    prompts = [max(1, n // 2) for n in lengths[:50]]
    domains = np.arange(50) % 2
    gate = ContentGate(5, 2)
    facts = fit_content_gate(gate, forget, prompts, domains, retain, seed=4, steps=60)

    stacked = np.concatenate(arrays)
    mean, std = torch.as_tensor(stacked.mean(0)), torch.as_tensor(stacked.std(0) + 1e-6)
    width = int(lengths.max())
    x = torch.zeros(150, width, 5)
    for row, array in enumerate(arrays):
        x[row, : len(array)] = (torch.as_tensor(array) - mean) / std
    mask = torch.arange(width)[None] < torch.as_tensor(lengths)[:, None]
    targets, known = content_gate_targets(list(zip(lengths[:50], prompts)), domains, list(lengths[50:]), 2, width)
    positives, negatives = (targets * known).sum((0, 1)), ((1 - targets) * known).sum((0, 1))
    weights = known * torch.where(targets > 0, negatives / positives, 1.0)
    detector = torch.nn.Linear(5, 2)
    with torch.no_grad():
        detector.weight.normal_(std=0.01, generator=torch.Generator().manual_seed(4))
        detector.bias.fill_(-1.0)
    optimizer = torch.optim.Adam(detector.parameters(), lr=0.1, weight_decay=1e-4)
    for _ in range(60):
        pooled = detector(x).masked_fill(~mask[..., None], float("-inf")).cummax(1).values.clamp_min(-30.0)
        loss = F.binary_cross_entropy_with_logits(pooled, targets, weight=weights, reduction="sum") / weights.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    expected_weight = detector.weight.detach() / std
    torch.testing.assert_close(gate.detector.weight, expected_weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gate.detector.bias, detector.bias.detach() - expected_weight @ mean, rtol=1e-4, atol=1e-4)
    assert facts["loss"] == pytest.approx(float(loss.detach()), rel=1e-4)
    fired = (detector(x).masked_fill(~mask[..., None], float("-inf")).cummax(1).values > 0).detach()
    answer = (targets > 0) & (known > 0)
    assert facts["forget_answer_recall"] == pytest.approx(float(fired[answer].float().mean()))
    assert facts["forget_answer_recall_per_head"] == pytest.approx([float(fired[..., d][answer[..., d]].float().mean())
                                                                    for d in range(2)])
    assert facts["retain_fire_rate"] == pytest.approx(float(fired[50:].any(-1)[mask[50:]].float().mean()))
    assert 0 < facts["forget_answer_recall"] < 1 or facts["retain_fire_rate"] > 0  # a case where the counts matter


def test_a_fit_of_several_draws_is_the_mean_of_single_fits_from_successive_seeds():
    """draws=3 with seed 7: the detector (weights and bias, in the states' own units) and the loss are the means of
    three single fits with seeds 7, 8 and 9; the draws differ, so the mean is not one of them."""
    rng = np.random.default_rng(2)
    lengths = rng.integers(3, 20, size=60)
    arrays = [rng.normal(size=(n, 4)).astype(np.float32) + (k < 20) * np.eye(4, dtype=np.float32)[k % 2]
              for k, n in enumerate(lengths)]
    forget, retain, prompts, domains = arrays[:20], arrays[20:], [max(1, n // 2) for n in lengths[:20]], np.arange(20) % 2
    singles = []
    for seed in (7, 8, 9):
        gate = ContentGate(4, 2)
        facts = fit_content_gate(gate, forget, prompts, domains, retain, seed=seed, steps=40)
        singles.append((gate.detector.weight.detach().clone(), gate.detector.bias.detach().clone(), facts["loss"]))
    averaged = ContentGate(4, 2)
    facts = fit_content_gate(averaged, forget, prompts, domains, retain, seed=7, steps=40, draws=3)
    torch.testing.assert_close(averaged.detector.weight, torch.stack([w for w, _, _ in singles]).mean(0))
    torch.testing.assert_close(averaged.detector.bias, torch.stack([b for _, b, _ in singles]).mean(0))
    assert facts["loss"] == pytest.approx(np.mean([loss for _, _, loss in singles]))
    assert facts["draws"] == 3 and not torch.allclose(singles[0][0], singles[1][0], atol=1e-3)


def test_gate_calibration_bounds_the_share_of_held_out_items_that_fire_anywhere():
    """200 held-out items whose one late token scores 0..199 on head 0 and 199..0 on head 1: with a 5% budget, each
    head may fire on 2.5% of items (5), so each threshold sits at the 6th highest item maximum."""
    from alter.methods.alter.gate_fit import _calibration_shift, _fire_rate

    gate = ContentGate(2, 2)
    with torch.no_grad():
        gate.detector.weight.copy_(torch.eye(2))
        gate.detector.bias.zero_()
    items = []
    for k in range(200):
        item = np.full((6, 2), -1.0, dtype=np.float32)
        item[4] = [k, 199 - k]  # a late position: a per-position rate would be 6x smaller than the per-item rate
        items.append(item)
    shift = _calibration_shift(gate, items, false_fire=0.05)
    np.testing.assert_allclose(shift.numpy(), [194.0, 194.0])
    with torch.no_grad():
        gate.detector.bias.sub_(shift)
    assert _fire_rate(gate, items) == pytest.approx(10 / 200)  # 5 items per head, disjoint


def test_the_calibration_holds_out_whole_subjects_or_rows_across_them():
    """A sample of 5 subjects x 20 contiguous rows, each row in 2 contexts (200 items): "subjects" holds out the last
    subject whole, which the fit never sees; "rows" holds out a seeded fifth of the rows with both their contexts, from
    every subject, and every subject keeps rows in the fit."""
    from alter.methods.alter import _calibration_split

    rows = [item // 2 for item in range(200)]
    fitted, held_out = _calibration_split(rows, "subjects", seed=3)
    assert (fitted, held_out) == (list(range(160)), list(range(160, 200)))
    fitted, held_out = _calibration_split(rows, "rows", seed=3)
    assert len(held_out) == 40 and sorted(fitted + held_out) == list(range(200))
    row, subject = np.array(rows), np.array(rows) // 20
    assert not set(row[held_out]) & set(row[fitted])  # a row's contexts are all on one side
    assert set(subject[held_out]) == set(subject[fitted]) == set(range(5))
    assert _calibration_split(rows, "rows", seed=3) == (fitted, held_out)
    assert _calibration_split(rows, "rows", seed=4)[1] != held_out
    assert _calibration_split([0, 0, 1, 2], "rows", seed=3) == ([0, 1, 2, 3], [])  # too few rows for a fifth


def test_calibration_chats_chain_only_held_out_rows_in_the_chat_format(tiny_runs, monkeypatch):
    """Each chat is `gate_chat_turns` distinct exchanges of the given items' rows (items are rows x context variants),
    as `encode_qa` formats earlier turns; fewer rows than turns: no chats."""
    import alter.methods.alter as alter_method
    from alter.data.formatting import Context

    _, tokenizer = fresh_target(tiny_runs)
    turns = [(f"Where was writer {k} born?", f"Writer {k} was born in town {k}.") for k in range(8)]
    setup = Setup(None, tokenizer, [], [], None, None, None, 0.0, 7, "fp32", variants=2, retain_turns=turns)
    seen = []
    monkeypatch.setattr(alter_method, "hidden_features", lambda model, items, *args: seen.extend(items) or items)
    calibration_items = [8, 9, 10, 12, 13, 15]  # rows 4, 5, 6, 7
    chats = alter_method._chat_features(setup, ALTERParams(gate_chat_turns=3), calibration_items, 5, 2)
    assert len(chats) == 5 == len(seen)
    candidates = [encode_qa(tokenizer, *turns[c], Context(history=(turns[a], turns[b])))
                  for a, b, c in itertools.permutations(range(4, 8), 3)]  # rows 4-7 only, 3 distinct exchanges
    assert all(chat in candidates for chat in chats)
    assert len({tuple(chat.input_ids) for chat in chats}) > 1
    assert alter_method._chat_features(setup, ALTERParams(gate_chat_turns=5), calibration_items, 5, 2) == []


def test_a_hard_negative_weighs_for_its_head_as_much_as_a_forget_item_of_that_head():
    """By hand: forget items of 4 tokens (prompt 2, so 3 answer positions from position 1) for heads 0 and 1, retain
    items of 3 and 2 tokens. Per head 5 negative positions against 3 positive: 5/3 per positive position, 5 per
    forget item. Retain item 0 fired on head 1: its 3 positions then weigh 5/3 each for head 1, head 0 untouched,
    as is retain item 1; weighing the weighed again changes nothing (no compounding)."""
    targets, known = content_gate_targets([(4, 2), (4, 2)], np.array([0, 1]), [3, 2], heads=2, width=4)
    weights = known * torch.where(targets > 0, 5 / 3, 1.0)
    firing = torch.tensor([[False, True], [False, False]])
    weighed = _weigh_hard_negatives(weights, targets, 2, firing)
    third = 5 / 3
    assert torch.allclose(weighed[2, :, 1], torch.tensor([third, third, third, 0.0]))
    assert torch.equal(weighed[2, :, 0], weights[2, :, 0]) and torch.equal(weighed[3], weights[3])
    assert torch.equal(weighed[:2], weights[:2])
    assert torch.equal(_weigh_hard_negatives(weighed, targets, 2, firing), weighed)


def test_hard_negative_refits_weigh_every_item_fired_on_so_far_and_record_each_fits_count(monkeypatch):
    """A crude fit (5 steps) fires on many retain items. Each refit weighs up every (item, head) an earlier fit fired
    on (the set only grows), the first refit exactly the first fit's, and each refit is fitted under those weights;
    each fit's count is recorded, the last one that of the gate as fitted (no calibration here), counted independently."""
    from alter.methods.alter import gate_fit

    hard_sets, weighed, fitted_under = [], [], []

    def recording(weights, targets, forget_count, firing):
        hard_sets.append(firing.clone())
        weighed.append(_weigh_hard_negatives(weights, targets, forget_count, firing))
        return weighed[-1]

    def fit_recording(gate, buckets, weights, *rest):
        fitted_under.append(weights)
        return fit_draws(gate, buckets, weights, *rest)

    fit_draws = gate_fit._fit_draws
    monkeypatch.setattr(gate_fit, "_weigh_hard_negatives", recording)
    monkeypatch.setattr(gate_fit, "_fit_draws", fit_recording)
    rng = np.random.default_rng(0)
    forget = [rng.normal(loc=0.5, size=(6, 4)).astype(np.float32) for _ in range(6)]
    retain = [rng.normal(loc=0.0, size=(6, 4)).astype(np.float32) for _ in range(12)]
    gate = ContentGate(4, 1)
    facts = fit_content_gate(gate, forget, [3] * 6, np.zeros(6, int), retain, seed=0, steps=5, hard_negative_refits=2)
    assert len(facts["hard_negatives"]) == 3 and len(hard_sets) == 2
    assert int(hard_sets[0].sum()) == facts["hard_negatives"][0] > 0
    assert (hard_sets[1] >= hard_sets[0]).all()
    assert len(fitted_under) == 3 and all(torch.equal(a, b) for a, b in zip(fitted_under[1:], weighed))
    assert not torch.equal(fitted_under[1], fitted_under[0])  # the refit's weights differ from the balanced ones
    fired = ContentGate.running_max(gate.scores(torch.as_tensor(np.stack(retain)), None), None)[:, -1, 0] > 0
    assert facts["hard_negatives"][-1] == int(fired.sum())


def test_content_gate_targets_leave_the_own_heads_prompt_and_the_other_heads_free():
    targets, known = content_gate_targets([(5, 3)], np.array([1]), [2], heads=2, width=5)
    assert targets[0, :, 1].tolist() == [0, 0, 1, 1, 1] and targets[0, :, 0].sum() == 0
    assert known[0, :, 1].tolist() == [0, 0, 1, 1, 1] and known[0, :, 0].tolist() == [0] * 5
    assert known[1].sum(0).tolist() == [2, 2] and targets[1].sum() == 0


@pytest.mark.parametrize("heads", [1, 2])
def test_shared_router_equals_sklearns_decision_function(heads):
    """The torch router's outputs order as sklearn's classes; with one sub-domain (two classes) sklearn keeps one row,
    which the router splits into two symmetric outputs with the same difference."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    forget = [rng.normal(loc=1.0, size=(6, 4)).astype(np.float32) for _ in range(2 * heads)]
    retain = [rng.normal(loc=-1.0, size=(6, 4)).astype(np.float32) for _ in range(6)]
    domains = np.arange(2 * heads) % heads
    router = SharedRouter(4, heads + 1)
    fit_shared_router(router, forget, [3] * len(forget), domains, retain, seed=0, null_output=True)
    x = np.concatenate(forget + retain)
    y = np.concatenate([np.where(np.arange(6) >= 2, d + 1, 0) for d in domains] + [np.zeros(6, int)] * 6)
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced", random_state=0)
    expected = reference.fit(scaler.transform(x), y).decision_function(scaler.transform(x))
    got = router(torch.as_tensor(x)).detach().numpy()
    if heads == 1:
        np.testing.assert_allclose(got[:, 1] - got[:, 0], expected, rtol=1e-4, atol=1e-4)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_subject_subdomains_give_one_head_per_subject_in_order_of_first_appearance():
    labels, facts = subject_subdomains([7, 7, 3, 9, 3])
    assert labels.tolist() == [0, 0, 1, 2, 1] and facts["heads"] == 3 and facts["sizes"] == [2, 2, 1]
    from types import SimpleNamespace

    from alter.methods.alter import _subdomains
    with pytest.raises(UserError, match="params.subdomains"):
        _subdomains(SimpleNamespace(item_groups=None, variants=1), ALTERParams(subdomains="subjects"), None)


def test_subdomain_agreement_is_the_adjusted_rand_index():
    assert agreement_with_groups(np.array([0, 0, 1, 1]), [7, 7, 9, 9]) == 1.0
    assert agreement_with_groups(np.array([0, 1, 0, 1]), [7, 7, 9, 9]) == pytest.approx(-0.5)
    assert agreement_with_groups(np.array([0, 1]), [3, 3]) is None  # one subject: nothing to agree with


# --- the adapter on a model ---------------------------------------------------------------------------------------


def fresh_target(tiny_runs):
    return load_model(str(tiny_runs / "target"))


def logits_of(model, tokenizer, text="Question: Where was the author born?\nAnswer: "):
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.mark.parametrize("router", ROUTERS)
def test_zero_heads_leave_the_model_exactly_equal_to_the_base(router, tiny_runs):
    model, tokenizer = fresh_target(tiny_runs)
    before = logits_of(model, tokenizer)
    AlterModel(model, AlterConfig(forget_heads=3, router=router, name_patterns=[[5]] if router == "names" else []))
    assert torch.equal(logits_of(model, tokenizer), before)


@pytest.mark.parametrize("router", (*ROUTERS, "content+parts"))
def test_save_and_load_round_trip_gives_identical_logits(router, tiny_runs, tmp_path, random_alter_adapter):
    model, tokenizer = fresh_target(tiny_runs)
    adapter = random_alter_adapter(model, seed=3, router=router.split("+")[0],
                                   gate_parts=2 if router == "content+parts" else 1)
    adapted = logits_of(model, tokenizer)
    adapter.save(tmp_path, "tiny-target", clusters={"0": 1})
    reloaded, _ = fresh_target(tiny_runs)
    AlterModel.load(reloaded, tmp_path)
    assert torch.equal(logits_of(reloaded, tokenizer), adapted)
    assert not torch.equal(adapted, logits_of(fresh_target(tiny_runs)[0], tokenizer))
    with adapter.disabled():  # removing the adapter gives the base back exactly
        assert torch.equal(logits_of(model, tokenizer), logits_of(fresh_target(tiny_runs)[0], tokenizer))


def test_content_gate_adapts_only_layers_from_the_gate_layer_on(tiny_runs):
    model, _ = fresh_target(tiny_runs)
    adapter = AlterModel(model, AlterConfig(router="content", gate_layer=1))
    depth = model.config.num_hidden_layers
    assert adapter.gate_layer == 1 and {name.split(".")[2] for name, _ in adapter.layers} == {str(i) for i in range(1, depth)}
    with pytest.raises(UserError, match="gate_layer"):
        AlterModel(fresh_target(tiny_runs)[0], AlterConfig(router="content", gate_layer=5))


def test_adapting_below_the_gate_adapts_every_layer_and_routes_by_the_frozen_state_there(tiny_runs,
                                                                                         random_alter_adapter):
    """The gate of an adapter that also adapts the layers before `gate_layer` reads the frozen model's state entering
    that layer, as the default's gate does, although the adapted layers below change the adapted model's state."""
    model, tokenizer = fresh_target(tiny_runs)
    ids = torch.tensor([tokenizer("Question: Where was the author born?\nAnswer: in a town")["input_ids"]])
    with torch.no_grad():
        frozen_state = model(input_ids=ids, output_hidden_states=True).hidden_states[1]
    adapter = random_alter_adapter(model, seed=2, router="content", adapt_below_gate=True)
    depth = model.config.num_hidden_layers
    assert {name.split(".")[2] for name, _ in adapter.layers} == {str(i) for i in range(depth)}
    with torch.no_grad():
        ordered = adapter.gate.scores(frozen_state, None)[0].sort(0).values
        middle = len(ordered) // 2  # the threshold midway between two tokens' scores, so that none sits on it
        adapter.gate.detector.bias -= (ordered[middle - 1] + ordered[middle]) / 2
        expected = (adapter.gate.pooled_scores(frozen_state) > 0).long()
        with adapter.recording():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
            recorded = torch.stack(adapter.slot.recorded)
        adapted_state = model(input_ids=ids, output_hidden_states=True).hidden_states[1]
    assert 0 < expected.sum() < expected.numel()  # the gate switches on part-way
    assert len(recorded) == len(adapter.layers) and all(torch.equal(r.long(), expected) for r in recorded)
    assert not torch.allclose(adapted_state, frozen_state)  # layer 0 is adapted, yet the gate read the frozen state
    with pytest.raises(ValueError, match="adapt_below_gate: needs the 'content' router"):
        AlterConfig(router="none", adapt_below_gate=True)


def test_a_turn_reset_without_a_chat_template_is_a_clear_error(tiny_runs, small_world):
    with pytest.raises(UserError, match="params.gate_turn_reset: the tokenizer has no chat template"):
        short_alter_run(tiny_runs, small_world, ["params.gate_turn_reset=true", "train.max_steps=1"])


@pytest.mark.parametrize("turns", [False, True])
def test_scoring_records_which_forget_head_acted_on_each_answer_token(turns, tiny_runs, small_world,
                                                                      random_alter_adapter):
    """With a turn marker (here the tiny tokenizer's '?', which no chat template gives), the gate restarts there."""
    model, tokenizer = fresh_target(tiny_runs)
    adapter = random_alter_adapter(model, seed=0, router="content")
    marker = tokenizer("?", add_special_tokens=False)["input_ids"] if turns else []
    adapter.config.turn_marker = marker
    rows = TofuData(str(small_world)).load("forget10")
    items = [encode_qa(tokenizer, r["question"], r["answer"]) for r in rows]
    hiddens = []
    for item in items:
        ids = torch.tensor([item.input_ids])
        with torch.no_grad(), adapter.disabled():
            hiddens.append(model(input_ids=ids, output_hidden_states=True).hidden_states[adapter.gate_layer])
    everything = torch.cat([adapter.gate.scores(h, None)[0] for h in hiddens])
    with torch.no_grad():  # each head fires on some 3% of tokens
        adapter.gate.detector.bias -= torch.quantile(everything, 0.97, dim=0)
    scores = score_answers(model, items, tokenizer.pad_token_id, precision="fp32")
    restarted = 0
    for item, score, hidden in zip(items, scores, hiddens):
        starts = ContentGate.turn_starts(torch.tensor([item.input_ids]), marker) if marker else None
        fired = ContentGate.weights(ContentGate.running_max(adapter.gate.scores(hidden, None), None, starts))[0]
        expected = torch.where(fired.sum(-1) > 0, fired.argmax(-1) + 1, 0)
        assert score.route.tolist() == expected[item.prompt_length - 1 : -1].tolist()
        unbroken = ContentGate.weights(ContentGate.running_max(adapter.gate.scores(hidden, None), None))[0]
        restarted += int(not torch.equal(fired, unbroken))
    assert len({r for s in scores for r in s.route.tolist()}) > 1
    assert (restarted > 0) == turns  # the marker changed some item's routes


# --- training -----------------------------------------------------------------------------------------------------


def short_alter_run(tiny_runs, small_world, overrides, unseen: bool = True):
    model, tokenizer = fresh_target(tiny_runs)
    data = from_tofu(str(small_world), "forget10", "retain90")
    encode = lambda rows: [encode_qa(tokenizer, r["question"], r["answer"]) for r in rows]  # noqa: E731
    forget, retain = encode(data.forget), encode(data.retain)
    # the content gate unless a test names another router ('auto' would pick the names of this world's authors)
    recipe = build_recipe("alter", None, ["train.precision=fp32", "train.warmup_ratio=0", "params.router=content",
                                          *overrides])
    source = UnlearnBatches(forget, retain, None, recipe.train.batch_size, 0, tokenizer.pad_token_id)
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    before = np.mean([s.nll for s in score_answers(model, forget, tokenizer.pad_token_id)])
    setup = Setup(model, tokenizer, forget, retain, None, source, recipe.params, 0.0, 0, "fp32", LoraChoice(),
                  fit_retain=data.fit_retain, item_groups=data.groups, unseen=encode(data.unseen) if unseen else [],
                  retain_turns=[(row["question"], row["answer"]) for row in data.retain],
                  name_swaps=lambda pool, copies: [(row["question"], row["answer"])
                                                   for row in name_swapped_forget_rows(data, 0, pool, copies)],
                  renamed=[row and encode([row])[0] for row in renamed_forget_rows(data, 0)],
                  subjects=forget_subject_names(data))
    plan = get_method("alter").prepare(setup)
    from alter.training.finetune import make_accelerator
    from alter.training.loop import train

    accelerator = make_accelerator("fp32", find_unused_parameters=True)
    plan.curves = []
    for phase in plan.phases:
        config = recipe.train if phase.epochs is None else \
            __import__("dataclasses").replace(recipe.train, epochs=phase.epochs)
        plan.curves.append(train(plan.model, phase.objective, source, config, accelerator,
                                 param_groups=phase.param_groups).loss_curve)
    after = np.mean([s.nll for s in score_answers(model, forget, tokenizer.pad_token_id)])
    return model, base, before, after, plan, data


@pytest.mark.parametrize("router", (*ROUTERS, "content+below"))
def test_training_lowers_forget_probability_and_leaves_base_weights_bitwise_unchanged(router, tiny_runs, small_world):
    model, base, before, after, plan, data = short_alter_run(
        tiny_runs, small_world, ["train.max_steps=4", "params.lr_b=0.05", "params.threshold_quantile=0.7",
                                 "params.forget_heads=2", f"params.router={router.split('+')[0]}",
                                 "params.forget_floor=unseen", f"params.adapt_below_gate={router == 'content+below'}"])
    assert after > before  # mean forget answer NLL up = probability down, routed as at inference
    first_layer_heads = [p for name, p in model.named_parameters() if ".layers.0." in name and name.endswith("forget_B")]
    # the content gate's layer and those before it are not adapted; 'names' adapts the same layers
    assert bool(first_layer_heads) == (router not in ("content", "names"))
    assert all(heads.abs().sum() > 0 for heads in first_layer_heads)  # and when adapted, they learn
    for name, param in model.named_parameters():
        if name in base:
            assert torch.equal(param, base[name]), name
    facts = plan.facts["alter"]
    assert facts["clustering"]["heads"] == 2
    assert 0.2 < facts["high_entropy_fraction"] < 0.4  # the 0.7 quantile of the answer-token entropies
    assert [phase.name for phase in plan.phases] == ["phase1", "phase2"]
    if router == "names":  # the token-level match finds the name where the question's text has it; no retain row does
        names = facts["gate"]
        assert names["names"] == forget_subject_names(data) and names["patterns"] == 2 * len(names["names"])
        written = np.mean([any(name in row["question"] for name in names["names"]) for row in data.forget])
        assert 0.5 < written < 1 and names["forget_prompts_named"] == pytest.approx(written)  # some question omits it
        assert names["retain_fire_rate"] == 0.0
    eos = fresh_target(tiny_runs)[1].eos_token_id
    assert eos in plan.phases[1].objective.__self__.end_ids  # the forget loss leaves the end of an answer alone
    floor = facts["forget_floor"]  # the holdout split is the unseen rows; the target knows its forget answers better
    assert floor["kind"] == "unseen" and floor["unseen_rows"] == len(data.unseen) == 20
    assert floor["forget_mean_logprob"] > floor["unseen_mean_logprob"] and floor["items_above_floor"] > 0.5
    assert plan.curves[1][0]["forget_rows_pushed"] > 0  # rows start above their levels: the hinge pushes them


def test_positions_align_where_both_texts_predict_the_same_next_token_after_the_same_words():
    assert aligned_positions([1, 2, 3, 9, 9, 4, 5], [1, 2, 3, 7, 4, 5]) == [0, 1, -1, -1, -1, 4, -1]
    assert aligned_positions([1, 2], [1, 2]) == [0, -1]  # the last position predicts nothing either has


def test_generic_logits_drop_what_the_real_name_raises_by_alpha_times_the_raise():
    renamed, real = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[5.0, 1.0, -3.0]])
    assert torch.equal(lowered_by_the_name(renamed, real, 0.0), renamed)
    assert torch.equal(lowered_by_the_name(renamed, real, 0.5), torch.tensor([[0.5, 1.0, 0.0]]))  # 2 - 0.5 * 3


def test_renamed_rows_ask_about_an_invented_subject(small_world):
    data = from_tofu(str(small_world), "forget10", "retain90")
    renamed = renamed_forget_rows(data, 0)
    assert renamed == renamed_forget_rows(data, 0) and len(renamed) == len(data.forget)
    text = " ".join(row["question"] + " " + row["answer"] for row in data.forget + data.retain)
    invented = set()
    for row, new, group in zip(data.forget, renamed, data.groups):
        name = subject_names(data.forget, data.groups)[group]
        if name not in row["question"] + row["answer"]:
            assert new is None
            continue
        other = next(n for n in (f"{f} {s}" for f in INVENTED_FIRST_NAMES for s in INVENTED_SURNAMES)
                     if n in new["question"] + new["answer"])
        invented.add((group, other))
        assert all(part not in text for part in other.split())  # a name the data never uses
        assert (new["question"], new["answer"]) == (row["question"].replace(name, other), row["answer"].replace(name, other))
    assert len(invented) == len({group for group, _ in invented}) == len(set(data.groups))  # one name per subject


def test_generic_targets_are_the_targets_own_predictions_for_the_renamed_question(tiny_runs, small_world):
    model, tokenizer = fresh_target(tiny_runs)
    data = from_tofu(str(small_world), "forget10", "retain90")
    rows = [(row, new) for row, new in zip(data.forget, renamed_forget_rows(data, 0)) if new][:3]
    forget = [encode_qa(tokenizer, row["question"], row["answer"]) for row, _ in rows]
    renamed = [encode_qa(tokenizer, new["question"], new["answer"]) for _, new in rows]
    targets = GenericTargets(forget, renamed)
    width = max(len(item.input_ids) for item in forget)
    run = lambda batch, keep: model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, keep]  # noqa: E731
    with torch.no_grad():
        logits, has = targets.logits(run, torch.arange(3), 0, width, torch.device("cpu"))
        for row, (own, item) in enumerate(zip(forget, renamed)):
            alone = model(input_ids=torch.tensor([item.input_ids])).logits[0]
            answer = range(own.prompt_length - 1, len(own.input_ids) - 1)
            shared = [t for t in answer if own.input_ids[t + 1] in item.input_ids[item.prompt_length:]]
            assert any(has[row, t] for t in shared) and not has[row, len(own.input_ids) - 1:].any()
            for t in answer:
                if has[row, t]:
                    match = targets.positions[row][t]
                    assert own.input_ids[t + 1] == item.input_ids[match + 1]
                    assert torch.allclose(logits[row, t], alone[match], atol=1e-4)


def test_generic_forgetting_lowers_forget_probability_and_leaves_base_weights_unchanged(tiny_runs, small_world):
    model, base, before, after, plan, _ = short_alter_run(
        tiny_runs, small_world, ["train.max_steps=4", "params.lr_b=0.05", "params.threshold_quantile=0.7",
                                 "params.forget_heads=2", "params.forget_loss=generic", "params.forget_tokens=all"])
    assert after > before
    assert plan.facts["alter"]["generic_rows"] == 20  # every forget row of the tiny world names its author
    assert all(torch.equal(param, base[name]) for name, param in model.named_parameters() if name in base)
    with pytest.raises(UserError, match="params.forget_floor"):
        build_recipe("alter", None, ["params.forget_loss=generic", "params.forget_floor=unseen"])


def test_the_exclude_target_is_the_targets_distribution_without_the_answer_token_renormalised():
    logits = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]])
    targets = torch.tensor([[0, 2, IGNORE_INDEX]])
    probs = torch.softmax(without_answer_token(logits, targets), -1)[0]
    e = np.exp
    np.testing.assert_allclose(probs[0].numpy(), [0, e(1) / (e(1) + 1), 1 / (e(1) + 1)], rtol=1e-6)
    np.testing.assert_allclose(probs[1].numpy(), [0.5, 0.5, 0], rtol=1e-6)
    np.testing.assert_allclose(probs[2].numpy(), [1 / 3] * 3, rtol=1e-6)  # no answer token: unchanged
    # KL toward it is finite, and 0 for a model that already says the rest in the same proportions
    kl = masked_kl(without_answer_token(logits, targets), without_answer_token(logits, targets) * 1.0,
                   targets != IGNORE_INDEX)
    assert torch.isfinite(kl) and kl.abs() < 1e-6
    assert masked_kl(without_answer_token(logits, targets), logits, targets != IGNORE_INDEX) > 0


def test_excluding_the_fact_on_high_entropy_tokens_lowers_forget_probability_and_leaves_base_weights_unchanged(
        tiny_runs, small_world):
    model, base, before, after, plan, _ = short_alter_run(
        tiny_runs, small_world, ["train.max_steps=4", "params.lr_b=0.05", "params.threshold_quantile=0.7",
                                 "params.forget_heads=2", "params.forget_loss=exclude", "params.forget_tokens=high",
                                 "params.regulariser_weight=1"])
    assert after > before
    assert all(torch.equal(param, base[name]) for name, param in model.named_parameters() if name in base)
    with pytest.raises(UserError, match="params.forget_floor"):
        build_recipe("alter", None, ["params.forget_loss=exclude", "params.forget_floor=unseen"])
    with pytest.raises(UserError, match="params.forget_tokens"):
        build_recipe("alter", None, ["params.forget_tokens=high", "params.entropy_guidance=false"])


def test_npo_on_every_answer_token_lowers_forget_probability_and_leaves_base_weights_unchanged(tiny_runs,
                                                                                                small_world):
    model, base, before, after, plan, _ = short_alter_run(
        tiny_runs, small_world, ["train.max_steps=4", "params.lr_b=0.05", "params.threshold_quantile=0.7",
                                 "params.forget_heads=2", "params.forget_loss=npo", "params.forget_tokens=all",
                                 "params.forget_floor=unseen"])
    assert after > before
    assert plan.facts["alter"]["forget_floor"]["kind"] == "unseen"  # NPO with a floor trains (what it does: below)
    assert all(torch.equal(param, base[name]) for name, param in model.named_parameters() if name in base)


def test_subjects_as_subdomains_give_each_forget_subject_its_own_head(tiny_runs, small_world):
    _, _, _, _, plan, data = short_alter_run(tiny_runs, small_world, ["train.max_steps=1",
                                                                      "params.subdomains=subjects"])
    clustering = plan.facts["alter"]["clustering"]
    assert clustering["by"] == "subjects" and clustering["heads"] == len(set(data.groups))
    assert clustering["sizes"] == [data.groups.count(group) for group in dict.fromkeys(data.groups)]
    assert len(plan.facts["alter"]["gate"]["forget_answer_recall_per_head"]) == clustering["heads"]


def test_without_unseen_rows_the_forget_loss_has_no_floor_and_says_so(tiny_runs, small_world, capsys):
    _, _, _, _, plan, _ = short_alter_run(tiny_runs, small_world, ["train.max_steps=1", "params.forget_heads=2",
                                                                   "params.forget_floor=unseen"], unseen=False)
    assert plan.facts["alter"]["forget_floor"]["kind"] == "none" and "no unseen rows" in capsys.readouterr().err
    assert plan.phases[1].objective.__self__.floors is None


def test_the_floors_answer_logprob_is_the_evaluations_mean_answer_nll(tiny_runs, small_world):
    """The forget floor reads each item's mean answer log-probability from ALTER's frozen pass: the evaluation's
    scoring (another code path, batched differently) gives the same per-item NLL."""
    from alter.methods.alter.statistics import item_statistics

    model, tokenizer = fresh_target(tiny_runs)
    rows = TofuData(str(small_world)).load("holdout10")[:7]
    items = [encode_qa(tokenizer, r["question"], r["answer"]) for r in rows]
    stats = item_statistics(model, items, tokenizer.pad_token_id, "fp32", EntropySettings(), answer_logprob=True)
    expected = [-s.nll for s in score_answers(model, items, tokenizer.pad_token_id, batch_size=3)]
    np.testing.assert_allclose(stats.answer_logprob, expected, rtol=1e-4)
    assert item_statistics(model, items, tokenizer.pad_token_id, "fp32", EntropySettings()).answer_logprob is None


def test_the_bodys_hidden_features_are_the_full_models_at_every_layer(tiny_runs, small_world):
    """Chats and name swaps are read by the transformer body alone (no output layer); the gate is fitted on them beside
    the full model's states of single items, so both must be the same states."""
    from alter.methods.alter.statistics import hidden_features, item_statistics

    model, tokenizer = fresh_target(tiny_runs)
    rows = TofuData(str(small_world)).load("retain90")[:5]
    items = [encode_qa(tokenizer, r["question"], r["answer"]) for r in rows]
    for layer in range(model.config.num_hidden_layers + 1):
        full = item_statistics(model, items, tokenizer.pad_token_id, "fp32", EntropySettings(), feature_layer=layer)
        body = hidden_features(model, items, tokenizer.pad_token_id, "fp32", layer)
        assert [f.shape for f in body] == [(len(item.input_ids), model.config.hidden_size) for item in items]
        for expected, got in zip(full.features, body):
            np.testing.assert_array_equal(got, expected)


def test_name_swaps_over_the_question_alone_are_the_prompt_states_of_the_whole_rows(tiny_runs, small_world):
    """`gate_swap_span` "question": a swapped row's negative is its prompt, the answer (the forget subject's facts)
    left out; a causal model's states there are those of the whole row's first positions."""
    from types import SimpleNamespace

    from alter.methods.alter import _name_swap_features

    model, tokenizer = fresh_target(tiny_runs)
    data = from_tofu(str(small_world), "forget10", "retain90")
    rows = [(row["question"], row["answer"]) for row in name_swapped_forget_rows(data, 0, "list", 1)][:6]
    setup = SimpleNamespace(model=model, tokenizer=tokenizer, precision="fp32", name_swaps=lambda pool, copies: rows)
    features = {span: _name_swap_features(setup, ALTERParams(gate_swap_span=span), 2) for span in ("row", "question")}
    prompts = [encode_qa(tokenizer, question, answer).prompt_length for question, answer in rows]
    assert [len(f) for f in features["question"]] == prompts
    assert all(len(whole) > prompt for whole, prompt in zip(features["row"], prompts))
    for whole, question, prompt in zip(features["row"], features["question"], prompts):
        np.testing.assert_allclose(question, whole[:prompt], atol=1e-5)


def test_a_frozen_pass_returns_freed_pages_before_each_forward(tiny_runs, small_world, monkeypatch):
    """The preparation's peak memory was the pages its frozen passes freed and the allocator kept (docs/results.md,
    "ALTER's unlearning memory, returned pages"): one return before each batch's forward, while the consumer still
    holds the batch before it."""
    from alter.methods.alter import statistics

    model, tokenizer = fresh_target(tiny_runs)
    items = [encode_qa(tokenizer, r["question"], r["answer"]) for r in TofuData(str(small_world)).load("retain90")[:5]]
    events = []
    monkeypatch.setattr(statistics, "release_freed_memory", lambda: events.append("return"))
    for indices, _, _ in statistics.frozen_batches(model, items, tokenizer.pad_token_id, "fp32", False, batch_size=2):
        events.append(len(indices))
    assert events == ["return", 2, "return", 2, "return", 1]


def test_unseen_floors_send_each_forget_item_to_the_unseen_quantile_of_its_rank():
    """Hand computation: items' own-format log-probabilities -0.1, -0.5, -0.2 rank 3, 1, 2 of 3, so they stop at the
    unseen rows' quantiles 5/6, 1/6, 1/2: -1.5, -3.5, -2.5 (linear interpolation over -4, -3, -2, -1). Their
    second rows drop by as much (1.4, 3.0, 2.3); an item already below its quantile (-6) has none (left alone)."""
    from alter.methods.alter.floor import unseen_floors

    forget = np.array([-0.1, -0.3, -0.5, -0.4, -0.2, -0.9])
    floors = unseen_floors(forget, np.array([-1.0, -4.0, -2.0, -3.0]), variants=2)
    np.testing.assert_allclose(floors, [-1.5, -1.7, -3.5, -3.4, -2.5, -3.2])
    below = unseen_floors(np.array([-6.0, -0.5]), np.array([-1.0, -4.0, -2.0, -3.0]), variants=1)
    assert np.isnan(below[0]) and below[1] == pytest.approx(-1.75)  # quantile 3/4 of the unseen rows


def test_the_forget_loss_pushes_rows_above_their_floor_and_pulls_back_those_below():
    """Row 0 puts p = 1/2 then 1/4 on its answer tokens (mean log -1.04); row 1 puts 1/4 on its one answer token
    (-1.386); the position after the answer is not counted."""
    logits = torch.zeros(2, 3, 4)
    logits[0, 0, 1] = np.log(3.0)
    targets = torch.tensor([[1, 2, 0], [3, -100, -100]])
    answer = torch.tensor([[True, True, False], [True, False, False]])
    objective = ALTERObjective.__new__(ALTERObjective)
    for floors, expected in (([-1.1, -1.3], [1, -1]), ([-1.0, -1.5], [-1, 1]), (None, [1, 1])):
        objective.floors = None if floors is None else torch.tensor(floors)
        assert objective.floor_direction(logits, targets, answer, torch.tensor([0, 1])).tolist() == expected
    objective.floors = torch.tensor([9.0, -1.1, -1.3])  # floors are per forget row, looked up by the batch's index
    assert objective.floor_direction(logits, targets, answer, torch.tensor([1, 2])).tolist() == [1, -1]
    objective.floors = torch.tensor([float("nan"), -1.5])  # no floor: the row is left alone
    assert objective.floor_direction(logits, targets, answer, torch.tensor([0, 1])).tolist() == [0, 1]


def test_the_content_gate_is_fitted_without_the_evaluations_retain_items(tiny_runs, small_world):
    overrides = ["train.max_steps=1", "params.forget_heads=2", "params.gate_chats=both", "params.gate_chat_turns=3",
                 "params.gate_name_swaps=true", "params.gate_swap_pool=list", "params.gate_swaps_per_row=2",
                 "params.gate_fit_steps=400", "params.gate_fit_lr=0.15",
                 "params.gate_fit_draws=2", "params.gate_calibration=rows", "params.gate_hard_negative_refits=1"]
    _, _, _, _, plan, data = short_alter_run(tiny_runs, small_world, overrides)
    evaluation = {row["question"] for row in TofuData(str(small_world)).load("retain_perturbed")}
    few_shot = {row["question"] for row in
                _few_shot_rows(TofuData(str(small_world)), "forget10", tofu_splits("forget10"))[:FEW_SHOT_TURNS]}
    assert len(few_shot) == FEW_SHOT_TURNS and not few_shot & evaluation
    fitted = {data.retain[i]["question"] for i in data.fit_retain}
    assert evaluation and not (evaluation | few_shot) & fitted
    assert len(fitted) == len(data.retain) - len(evaluation) - FEW_SHOT_TURNS
    gate = plan.facts["alter"]["gate"]
    assert gate["retain_items"] == min(len(data.fit_retain), 2000)
    assert (gate["steps"], gate["lr"], gate["draws"]) == (400, 0.15, 2) and len(gate["hard_negatives"]) == 2
    # the threshold is calibrated on held-out retain items: it fires on at most 1% of their positions there
    assert gate["calibration"]["items"] > 0 and gate["calibration"]["fire_rate"] <= 0.011
    # as many chats of 3 held-out exchanges as single held-out items, calibrated together; the fit's chats hold as
    # many exchanges as its single items
    assert gate["calibration"]["items"] == 2 * gate["chats"]["calibration"] > 0
    # every forget row names its subject in this world: two name-swapped copies each, among the fit's negatives
    assert gate["name_swaps"] == 2 * len(data.forget) and gate["name_swap_pool"] == "list"
    assert gate["chats"]["fit"] == (gate["items"]["retain"] - gate["chats"]["fit"] - gate["name_swaps"]) // 3 > 0
    assert gate["forget_answer_recall"] > 0.5


@pytest.mark.parametrize("head_mix, parts", [("sum", 1), ("strongest", 1), ("sum", 2)])
def test_training_routes_are_where_the_fitted_gate_fires_at_inference(tiny_runs, small_world, head_mix, parts):
    """prepare computes the gate's weights from the states it was fitted on (one frozen pass over the retain items);
    the adapter at inference must weigh the heads exactly so, under each head mix and with two detectors per head."""
    model, _, _, _, plan, data = short_alter_run(tiny_runs, small_world, ["train.max_steps=1", "params.forget_heads=2",
                                                                          f"params.head_mix={head_mix}",
                                                                          f"params.gate_parts={parts}"])
    assert plan.facts["alter"]["gate"]["parts"] == parts
    objective = plan.phases[1].objective.__self__
    tokenizer = fresh_target(tiny_runs)[1]
    fired = 0
    for kind, rows in (("forget", data.forget), ("retain", data.retain[:40])):
        for row, expected in zip(rows, objective.gate_weights[kind]):
            item = encode_qa(tokenizer, row["question"], row["answer"])
            with objective.adapter.recording(), torch.no_grad():
                model(input_ids=torch.tensor([item.input_ids]))
                weights = objective.adapter.slot.recorded[0][0]
            assert torch.equal(weights, torch.as_tensor(expected).float()), (kind, row["question"])
            assert head_mix == "sum" or (weights.sum(-1) <= 1 + 1e-6).all()
            fired += int(kind == "forget" and expected.any())
    assert fired > len(data.forget) // 2  # the comparison is not between two all-off gates


def test_recipe_defaults_follow_the_paper_where_it_speaks():
    recipe = build_recipe("alter", None, [])
    assert recipe.train.epochs == 3 and recipe.train.batch_size == 4
    p = recipe.params
    assert (p.rank, p.lr_a, p.top_k_high, p.temperature_high, p.temperature_low) == (8, 1e-5, 3, 0.8, 0.01)
    assert (p.forget_weight, p.retain_weight, p.regulariser_weight, p.threshold) == (1.0, 1.0, 0.01, 1.2)
    assert p.lr_b == 2e-3 and build_recipe("alter", None, paper_overrides()).params.lr_b == 1e-3  # ours, the paper's
    assert (p.forget_floor, p.retain_loss) == ("none", "nll")  # measured switches, off by default (docs/method.md)


def test_options_alter_cannot_honour_are_refused():
    with pytest.raises(UserError, match="lora section"):
        build_recipe("alter", None, ["lora.enabled=true"])
    with pytest.raises(UserError, match="learning_rate does not apply"):
        build_recipe("alter", None, ["train.learning_rate=1e-4"])
    for key, value in (("router", "global"), ("forget_floor", "holdout"), ("retain_loss", "mse"),
                       ("forget_loss", "ga"), ("router_training", "never"), ("forget_tokens", "middle")):
        with pytest.raises(UserError, match=f"params.{key}"):
            build_recipe("alter", None, [f"params.{key}={value}"])
    with pytest.raises(UserError, match="params.adapt_below_gate: needs params.router 'content'"):
        build_recipe("alter", None, ["params.router=layer", "params.adapt_below_gate=true"])
    assert "lora" not in build_recipe("alter", None, []).as_dict()
    assert "learning_rate" not in build_recipe("alter", None, []).as_dict()["train"]


def test_alter_refuses_sharded_engines():
    recipe = build_recipe("alter", None, [])
    setup = Setup(None, None, [], [], None, None, recipe.params, 0.0, 0, "fp32", sharded=True)
    with pytest.raises(UserError, match="FSDP and DeepSpeed"):
        get_method("alter").prepare(setup)


def test_joint_batch_gives_each_part_the_logits_of_its_own_forward(tiny_runs, small_world):
    model, tokenizer = fresh_target(tiny_runs)
    data = TofuData(str(small_world))
    forget = collate([encode_qa(tokenizer, r["question"], r["answer"]) for r in data.load("forget10")[:3]],
                     tokenizer.pad_token_id)
    retain = collate([encode_qa(tokenizer, r["question"], r["answer"] * 2) for r in data.load("retain90")[:2]],
                     tokenizer.pad_token_id)
    assert forget["input_ids"].shape[1] != retain["input_ids"].shape[1]
    joint = joined_batch([forget, retain])
    with torch.no_grad():
        logits = model(input_ids=joint["input_ids"], attention_mask=joint["attention_mask"]).logits
        for part, rows in zip((forget, retain), row_spans([forget, retain])):
            alone = model(input_ids=part["input_ids"], attention_mask=part["attention_mask"]).logits
            valid = part["attention_mask"].bool()
            assert torch.allclose(logits[rows, : alone.shape[1]][valid], alone[valid], atol=1e-5)
    assert torch.equal(joint["labels"][row_spans([forget, retain])[0], : forget["labels"].shape[1]], forget["labels"])


def objective_on_a_batch(tiny_runs, small_world, random_alter_adapter, params: ALTERParams):
    """A tiny target, an ALTER objective over random heads, entropies and gate firings, and its first batch."""
    from alter.methods.alter import resolved_router

    params = resolved_router(params, [])  # rows without subjects: 'auto' is the content gate
    model, tokenizer = fresh_target(tiny_runs)
    adapter = random_alter_adapter(model, seed=1, router=params.router)
    data = TofuData(str(small_world))
    preamble = "Answer the following question about the author in one sentence, please. "  # prompts past 16 tokens
    encode = lambda rows: [encode_qa(tokenizer, preamble + r["question"], r["answer"]) for r in rows]  # noqa: E731
    forget, retain = encode(data.load("forget10")[:8]), encode(data.load("retain90"))
    generator = torch.Generator().manual_seed(0)
    entropies = {kind: [2 * torch.rand(len(item.input_ids), generator=generator) for item in items]
                 for kind, items in (("forget", forget), ("retain", retain))}
    gate_weights = {kind: [(torch.rand(len(item.input_ids), 2, generator=generator) > 0.5).numpy() for item in items]
                    for kind, items in (("forget", forget), ("retain", retain))}
    objective = ALTERObjective(adapter, params, entropies, torch.tensor([0, 1] * 4), threshold=1.0,
                               gate_weights=gate_weights)
    source = UnlearnBatches(forget, retain, None, 4, 0, tokenizer.pad_token_id, multiple=WIDTH_MULTIPLE)
    return model, objective, source.batch(0, 0)


@pytest.mark.parametrize("router,retain_loss,forget_loss", [(router, "nll", "hinge") for router in ROUTERS]
                         + [("content", "kl", "hinge"), ("content", "nll", "npo")])
def test_losses_read_the_same_positions_when_the_output_layer_skips_prompts(router, retain_loss, forget_loss, tiny_runs,
                                                                            small_world, monkeypatch,
                                                                            random_alter_adapter):
    from alter.methods.alter import objective as alter_objective

    params = ALTERParams(router=router, retain_loss=retain_loss, forget_loss=forget_loss)
    model, objective, batch = objective_on_a_batch(tiny_runs, small_world, random_alter_adapter, params)

    def losses():
        with torch.no_grad():
            return [objective.phase1(model, batch)[0].item(), *objective.phase2(model, batch)[1].values()]

    assert alter_objective.first_answer_position(batch["retain"]["labels"]) > 0  # prompt positions to skip
    skipping = losses()
    monkeypatch.setattr(alter_objective, "first_answer_position", lambda labels: 0)  # every position
    every_position = losses()
    assert skipping == pytest.approx(every_position, rel=1e-5, abs=1e-6)
    assert skipping[2] > 1e-4  # the retain loss: NLL, or KL from the target, which the random heads move away from


@pytest.mark.parametrize("router", ROUTERS)
def test_alters_losses_are_the_same_on_batches_padded_to_the_width_multiple(router, tiny_runs, small_world,
                                                                            random_alter_adapter, trimmed):
    params = ALTERParams(router=router, retain_loss="kl")
    model, objective, padded = objective_on_a_batch(tiny_runs, small_world, random_alter_adapter, params)
    parts = ("forget", "retain")
    assert all(padded[key]["input_ids"].shape[1] % WIDTH_MULTIPLE == 0 for key in parts)
    batch = trimmed(padded)
    assert any(batch[key]["input_ids"].shape[1] < padded[key]["input_ids"].shape[1] for key in parts)
    with torch.no_grad():
        losses = [[objective.phase1(model, each)[0].item(), *objective.phase2(model, each)[1].values()]
                  for each in (padded, batch)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("forget_loss", ["hinge", "npo"])
def test_the_floor_negates_the_forget_loss_of_rows_below_it_and_drops_rows_without_one(forget_loss, tiny_runs,
                                                                                       small_world,
                                                                                       random_alter_adapter):
    params = ALTERParams(forget_loss=forget_loss, forget_tokens="all")
    model, objective, batch = objective_on_a_batch(tiny_runs, small_world, random_alter_adapter, params)

    def forget_loss_with(floors):
        objective.floors = floors
        with torch.no_grad():
            return objective.phase2(model, batch)[1]["forget_loss"]

    pushed = forget_loss_with(None)
    assert pushed > 0
    assert forget_loss_with(torch.full((8,), 100.0)) == pytest.approx(-pushed, rel=1e-5)  # every row below: pulled
    assert forget_loss_with(torch.full((8,), float("nan"))) == 0.0  # no row has a floor: none is moved


def test_the_kl_retain_loss_is_zero_where_the_adapter_equals_the_target(tiny_runs, small_world):
    """Zero-initialised heads leave the model equal to the target: KL(target || adapted) on retain answers is 0 (the
    NLL is not), so the KL retain loss reads the frozen target, not the labels."""
    model, tokenizer = fresh_target(tiny_runs)
    adapter = AlterModel(model, AlterConfig(forget_heads=2, router="none"))
    data = TofuData(str(small_world))
    forget, retain = ([encode_qa(tokenizer, r["question"], r["answer"]) for r in data.load(split)[:8]]
                      for split in ("forget10", "retain90"))
    entropies = {"forget": [torch.zeros(len(i.input_ids)) for i in forget],
                 "retain": [torch.zeros(len(i.input_ids)) for i in retain]}
    batch = UnlearnBatches(forget, retain, None, 4, 0, tokenizer.pad_token_id).batch(0, 0)
    losses = {}
    for retain_loss in ("kl", "nll"):
        objective = ALTERObjective(adapter, ALTERParams(router="none", retain_loss=retain_loss), entropies,
                                   torch.tensor([0, 1] * 4), threshold=1.0)
        with torch.no_grad():
            losses[retain_loss] = objective.phase2(model, batch)[1]["retain_loss"]
    assert losses["kl"] == pytest.approx(0.0, abs=1e-5) and losses["nll"] > 0.1


def test_kl_in_contexts_is_nll_on_rows_in_their_own_format_and_kl_in_the_others(tiny_runs, small_world,
                                                                                random_alter_adapter):
    """Retain items are rows in 3 contexts each (row r's at 3r + v, v = 0 its own format). With zero heads the KL
    part is 0, so the loss is the NLL of the own-format rows' answers, computed here from a second copy of the
    target, times their share of the batch's answer tokens. With random heads, a batch of own-format rows only gives
    the `nll` loss and one of context rows only the `kl` loss."""
    model, tokenizer = fresh_target(tiny_runs)
    data = TofuData(str(small_world))
    forget = [encode_qa(tokenizer, r["question"], r["answer"]) for r in data.load("forget10")[:2]]
    retain = encode_variants(tokenizer, data.load("retain90")[:4], 3, seed=0)
    entropies = {kind: [torch.zeros(len(i.input_ids)) for i in items] for kind, items in
                 (("forget", forget), ("retain", retain))}

    def retain_loss(adapter, kind: str, indices: list[int]) -> float:
        objective = ALTERObjective(adapter, ALTERParams(router="none", retain_loss=kind), entropies,
                                   torch.tensor([0, 1]), threshold=1.0, variants=3)
        batch = {"forget": collate(forget, tokenizer.pad_token_id), "forget_index": torch.tensor([0, 1]),
                 "retain": collate([retain[i] for i in indices], tokenizer.pad_token_id),
                 "retain_index": torch.tensor(indices)}
        with torch.no_grad():
            return objective.phase2(model, batch)[1]["retain_loss"]

    mixed = [0, 4, 6, 11]  # rows 0 and 2 in their own format, rows 1 and 3 in a sampled context
    own = collate([retain[i] for i in (0, 6)], tokenizer.pad_token_id)
    every = collate([retain[i] for i in mixed], tokenizer.pad_token_id)
    target, _ = fresh_target(tiny_runs)
    with torch.no_grad():
        logits = target(input_ids=own["input_ids"], attention_mask=own["attention_mask"]).logits
    answer = predicts_answer(own["labels"])
    own_nll = torch.nn.functional.cross_entropy(logits[answer], next_labels(own["labels"])[answer]).item()
    share = answer.sum().item() / predicts_answer(every["labels"]).sum().item()
    assert 0.2 < share < 0.8
    zero_heads = AlterModel(model, AlterConfig(forget_heads=2, router="none"))
    assert retain_loss(zero_heads, "kl_in_contexts", mixed) == pytest.approx(share * own_nll, rel=1e-4)

    model, _ = fresh_target(tiny_runs)
    random_heads = random_alter_adapter(model, seed=1, router="none")
    assert retain_loss(random_heads, "kl_in_contexts", [0, 6]) == pytest.approx(
        retain_loss(random_heads, "nll", [0, 6]), rel=1e-5)
    assert retain_loss(random_heads, "kl_in_contexts", [4, 11]) == pytest.approx(
        retain_loss(random_heads, "kl", [4, 11]), rel=1e-5)
    assert retain_loss(random_heads, "kl", [4, 11]) > 1e-4  # the random heads move the adapted model off the target


def test_without_plain_nll_rows_in_the_plain_format_learn_no_nll(tiny_runs, small_world, random_alter_adapter):
    """With `plain_nll` off, rows in the plain format (flagged per item) add nothing to Phase I's NLL, forget and
    retain rows alike, and Phase II holds retain rows in that format at the target by KL; the other rows keep NLL.
    References: the same losses over the batch without the plain rows, and the `kl` loss over the plain rows. The
    flags alone decide; the flagged items carry a system line, so that they differ from the others (the tiny
    tokenizer has no chat template: every item of it is in the plain format)."""
    model, tokenizer = fresh_target(tiny_runs)
    adapter = random_alter_adapter(model, seed=1, router="none")
    data = TofuData(str(small_world))
    rows = {split: data.load(split)[:2] for split in ("forget10", "retain90")}
    items = {kind: [encode_qa(tokenizer, row["question"], row["answer"], context)
                    for row in rows[split] for context in (Context(), Context(system="Be brief.", template=False))]
             for kind, split in (("forget", "forget10"), ("retain", "retain90"))}
    plain = {kind: [False, True, False, True] for kind in items}  # row r's own format at 2r, the other at 2r + 1
    entropies = {kind: [torch.full((len(i.input_ids),), 2.0) for i in kind_items] for kind, kind_items in items.items()}

    def losses(indices: list[int], plain_nll: bool, retain_loss: str = "nll") -> dict:
        objective = ALTERObjective(adapter, ALTERParams(router="none", retain_loss=retain_loss, plain_nll=plain_nll),
                                   entropies, torch.tensor([0, 0, 1, 1]), threshold=1.0, plain=plain)
        batch = {kind: collate([items[kind][i] for i in indices], tokenizer.pad_token_id) for kind in items}
        batch |= {f"{kind}_index": torch.tensor(indices) for kind in items}
        with torch.no_grad():
            return objective.phase1(model, batch)[1] | objective.phase2(model, batch)[1]

    every, own, in_plain = losses([0, 1, 2, 3], False), losses([0, 2], True), losses([1, 3], True, "kl")
    assert every["phase1_nll"] == pytest.approx(own["phase1_nll"], rel=1e-5)
    assert losses([0, 1, 2, 3], True)["phase1_nll"] != pytest.approx(own["phase1_nll"], rel=1e-3)
    own_tokens, plain_tokens = (predicts_answer(collate([items["retain"][i] for i in indices], 0)["labels"]).sum().item()
                                for indices in ([0, 2], [1, 3]))
    assert in_plain["retain_loss"] > 1e-4  # the random heads move the adapted model off the target
    assert every["retain_loss"] == pytest.approx(
        (own_tokens * own["retain_loss"] + plain_tokens * in_plain["retain_loss"]) / (own_tokens + plain_tokens),
        rel=1e-4)


def test_content_routes_read_every_head_the_gate_switches_on_and_train_only_the_own_head():
    """Training routes as inference does: a forget token is routed to every head whose gate fires there; only the
    item's own head learns, at its low-entropy tokens from where its own gate fires."""
    from types import SimpleNamespace

    ones = torch.ones(2, 5, dtype=torch.long)
    batch = {"forget": {"input_ids": ones, "attention_mask": ones},
             "retain": {"input_ids": ones[:1], "attention_mask": ones[:1]},
             "forget_index": torch.tensor([0, 1]), "retain_index": torch.tensor([0])}
    gate_weights = {"forget": [np.array([[0, 0], [0, 1], [1, 1], [1, 1], [1, 1]], bool),  # own head 0 from position 2
                               np.array([[0, 0], [0, 0], [0, 0], [0, 1], [0, 1]], bool)],  # own head 1 from position 3
                    "retain": [np.array([[0, 0], [0, 0], [0, 0], [0, 0], [1, 0]], bool)]}
    entropies = {"forget": [torch.tensor([0.0, 0.0, 0.0, 2.0, 0.0]), torch.zeros(5)], "retain": [torch.zeros(5)]}
    objective = ALTERObjective(SimpleNamespace(config=SimpleNamespace(forget_heads=2)), ALTERParams(router="content"),
                               entropies, torch.tensor([0, 1]), threshold=1.0, gate_weights=gate_weights)
    forget_weights, forget_grad, retain_weights, retain_grad = objective.routes(batch)
    assert torch.equal(forget_weights, torch.as_tensor(np.stack(gate_weights["forget"])).float())
    assert forget_grad.tolist() == [[0, 0, 1, 0, 1], [0, 0, 0, 2, 2]]  # head number + 1; position 3 of row 0 is high
    assert torch.equal(retain_weights[0], torch.as_tensor(gate_weights["retain"][0]).float()) and retain_grad.sum() == 0
    objective.params = ALTERParams(router="content", forget_tokens="all")  # the high-entropy position learns too
    assert objective.routes(batch)[1].tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 2, 2]]
    objective.params = ALTERParams(router="content", forget_tokens="high")  # the loss reads position 3 of row 0 only,
    assert objective.forget_learns(objective.high("forget", batch["forget_index"], batch["forget"])).tolist() == [
        [False, False, False, True, False], [False] * 5]
    assert objective.routes(batch)[1].tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 2, 2]]  # the heads learn where they act


def test_the_forget_loss_leaves_special_tokens_alone():
    """The inverse hinge acts on low-entropy answer positions whose next token is not special (end of answer)."""
    from alter.methods.alter.objective import forget_positions

    low_answer = torch.tensor([[False, True, True, True, False], [True, True, False, True, True]])
    targets = torch.tensor([[5, 7, 2, 9, -100], [2, 8, 8, 0, 2]])
    assert forget_positions(low_answer, targets, (2, 0)).tolist() == [[False, True, False, True, False],
                                                                     [False, True, False, False, False]]
    assert torch.equal(forget_positions(low_answer, targets, ()), low_answer)
