"""ALTER: entropies, the asymmetric adapter's isolation and routing, save/load, and a short training run."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from accelerate.utils import DistributedType

from alter.adapters.asymmetric import AsymmetricConfig, AsymmetricLinear, Routing, RoutingSlot, adapter_layers, route_weights
from alter.adapters.runtime import EntropySettings, attach, load_alter_adapter
from alter.data.batching import UnlearnBatches, collate
from alter.data.formatting import encode_qa
from alter.data.tofu import TofuData
from alter.entropy import shannon_entropy, tsallis_entropy
from alter.errors import UserError
from alter.evaluation.scoring import score_answers
from alter.methods import get_method
from alter.methods.alter import joined_batch, row_spans
from alter.models import load_model
from alter.training.finetune import make_accelerator
from alter.training.recipe import build_recipe


# --- entropy ------------------------------------------------------------------------------------------------------


def test_tsallis_and_shannon_against_numpy():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(50), size=8)
    logits = torch.tensor(np.log(probs), dtype=torch.float32)
    for q in (0.5, 1.2, 1.5, 2.0):
        expected = (1 - (probs ** q).sum(-1)) / (q - 1)
        np.testing.assert_allclose(tsallis_entropy(logits, q).numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(shannon_entropy(logits).numpy(), -(probs * np.log(probs)).sum(-1), rtol=1e-4)
    # q -> 1 recovers Shannon
    np.testing.assert_allclose(tsallis_entropy(logits, 1.0001).numpy(), shannon_entropy(logits).numpy(), rtol=1e-3)
    np.testing.assert_allclose(tsallis_entropy(logits, 1.0).numpy(), shannon_entropy(logits).numpy(), rtol=1e-6)


def test_entropy_limits_one_hot_and_uniform():
    one_hot = torch.full((1, 10), -1e4)
    one_hot[0, 3] = 0.0
    assert tsallis_entropy(one_hot, 1.5).item() == pytest.approx(0.0, abs=1e-6)
    assert shannon_entropy(one_hot).item() == pytest.approx(0.0, abs=1e-4)
    uniform = torch.zeros(1, 10)
    assert shannon_entropy(uniform).item() == pytest.approx(np.log(10), rel=1e-6)
    assert tsallis_entropy(uniform, 1.5).item() == pytest.approx((1 - 10 ** (1 - 1.5)) / 0.5, rel=1e-6)


# --- one adapted layer: isolation by token masks --------------------------------------------------------------------


def layer_with_random_heads(heads=2):
    torch.manual_seed(0)
    config = AsymmetricConfig(rank=4, forget_heads=heads)
    slot = RoutingSlot()
    layer = AsymmetricLinear(torch.nn.Linear(6, 5).requires_grad_(False), config, slot)
    with torch.no_grad():
        layer.retain_B.normal_()
        layer.forget_B.normal_()
    return layer, slot


def gradients(layer, slot, routing, loss_positions):
    layer.zero_grad()
    slot.routing = routing
    x = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(1))
    y = layer(x)
    (y * loss_positions[..., None]).sum().backward()
    return {name: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for name, p in layer.named_parameters()}


def training_routing():
    # row 0 belongs to sub-domain 1, row 1 to sub-domain 2; positions 0-1 are high-entropy, 2-3 low-entropy
    high = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    head = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 2]])
    return Routing(high=high, forget_head=head, a_grad=high, retain_grad=torch.zeros_like(high))


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


def test_shared_a_gets_no_gradient_from_low_entropy_tokens_and_retain_head_only_where_marked():
    layer, slot = layer_with_random_heads()
    low_only = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.float32)
    grads = gradients(layer, slot, training_routing(), low_only)
    assert torch.count_nonzero(grads["lora_A"]) == 0
    assert torch.count_nonzero(grads["retain_B"]) == 0  # retain_grad is off for every token here
    assert layer.base.weight.grad is None


def test_soft_route_lets_only_marked_tokens_see_the_frozen_forget_heads():
    layer, slot = layer_with_random_heads()
    off = torch.zeros(2, 4, dtype=torch.bool)
    marked = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)

    def routing():
        return Routing(high=off, forget_head=torch.zeros(2, 4, dtype=torch.long), a_grad=off, retain_grad=off,
                       soft_route=marked)

    grads = gradients(layer, slot, routing(), (~marked).float())
    assert torch.count_nonzero(grads["router"]) == 0
    grads = gradients(layer, slot, routing(), marked.float())
    assert torch.count_nonzero(grads["router"]) > 0
    assert torch.count_nonzero(grads["forget_B"]) == 0  # the heads are read, never trained, through the softmax


def test_router_temperatures_and_top_k():
    config = AsymmetricConfig(forget_heads=4, top_k_high=3, temperature_high=0.8, temperature_low=0.01)
    logits = torch.tensor([[[0.1, 0.5, 0.3, 0.2, 0.4], [0.1, 0.5, 0.3, 0.2, 0.4]]])
    high = torch.tensor([[True, False]])
    weights = route_weights(logits, high, config)
    soft = np.exp(logits[0, 0].numpy() / 0.8)
    soft /= soft.sum()
    top3 = np.argsort(-soft)[:3]
    expected = np.zeros(5)
    expected[top3] = soft[top3] / soft[top3].sum()
    np.testing.assert_allclose(weights[0, 0].numpy(), expected, rtol=1e-5)
    assert weights[0, 1].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]  # low-entropy: the single top head


# --- the adapter on a model ---------------------------------------------------------------------------------------


def fresh_target(tiny_runs):
    model, tokenizer = load_model(str(tiny_runs / "target"))
    return model, tokenizer


def logits_of(model, tokenizer, text="Question: Where was the author born?\nAnswer: "):
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def test_zero_heads_leave_the_model_exactly_equal_to_the_base(tiny_runs):
    model, tokenizer = fresh_target(tiny_runs)
    before = logits_of(model, tokenizer)
    attach(model, AsymmetricConfig(forget_heads=3), EntropySettings(threshold=0.5))
    assert torch.equal(logits_of(model, tokenizer), before)


def test_save_and_load_round_trip_gives_identical_logits(tiny_runs, tmp_path, random_alter_adapter):
    model, tokenizer = fresh_target(tiny_runs)
    runtime = random_alter_adapter(model, seed=3)
    adapted = logits_of(model, tokenizer)
    runtime.save(tmp_path, "tiny-target", {"0": 1})
    reloaded, _ = fresh_target(tiny_runs)
    load_alter_adapter(reloaded, tmp_path)
    assert torch.equal(logits_of(reloaded, tokenizer), adapted)
    assert not torch.equal(adapted, logits_of(fresh_target(tiny_runs)[0], tokenizer))


def short_alter_run(tiny_runs, small_world, overrides):
    model, tokenizer = fresh_target(tiny_runs)
    data = TofuData(str(small_world))
    encode = lambda rows: [encode_qa(tokenizer, r["question"], r["answer"]) for r in rows]  # noqa: E731
    forget, retain = encode(data.load("forget10")), encode(data.load("retain90"))
    recipe = build_recipe("alter", None, ["train.precision=fp32", "train.warmup_ratio=0", *overrides])
    source = UnlearnBatches(forget, retain, None, recipe.train.batch_size, 0, tokenizer.pad_token_id)
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        before = np.mean([s.nll for s in score_answers(model, forget, tokenizer.pad_token_id)])
    runtime, result, facts, clusters = get_method("alter").runner(
        model, tokenizer, forget, retain, source, recipe, make_accelerator("fp32"), tiny_runs / "alter-tmp", False, "fp32")
    with torch.no_grad():
        after = np.mean([s.nll for s in score_answers(model, forget, tokenizer.pad_token_id)])
    return model, base, before, after, facts, clusters, result


@pytest.mark.parametrize("router", ["shared", "layer"])
def test_training_lowers_forget_probability_and_leaves_base_weights_bitwise_unchanged(router, tiny_runs, small_world):
    model, base, before, after, facts, clusters, result = short_alter_run(
        tiny_runs, small_world, ["train.max_steps=4", "params.lr_b=0.05", "params.threshold_quantile=0.7",
                                 "params.forget_heads=2", f"params.router={router}"])
    assert after > before  # mean forget answer NLL up = probability down, with the router choosing at inference
    for name, param in model.named_parameters():
        if name in base:
            assert torch.equal(param, base[name]), name
    assert facts["clustering"]["heads"] == 2 and set(clusters.values()) == {0, 1}
    assert 0.2 < facts["high_entropy_fraction"] < 0.4  # the 0.7 quantile of the answer-token entropies
    assert result.steps == 8 and {p["phase"] for p in result.loss_curve} == {1, 2}


def test_recipe_defaults_follow_the_paper():
    recipe = build_recipe("alter", None, [])
    assert recipe.train.epochs == 3 and recipe.train.batch_size == 4
    p = recipe.params
    assert (p.rank, p.lr_a, p.lr_b, p.top_k_high, p.temperature_high, p.temperature_low) == (8, 1e-5, 1e-3, 3, 0.8, 0.01)
    assert (p.forget_weight, p.retain_weight, p.regulariser_weight, p.threshold) == (1.0, 1.0, 0.01, 1.2)


def test_scoring_records_the_route_and_entropy_class_of_each_answer_token(tiny_runs, small_world):
    model, tokenizer = fresh_target(tiny_runs)
    runtime = attach(model, AsymmetricConfig(forget_heads=2), EntropySettings(threshold=0.05))
    torch.manual_seed(0)
    inputs = []
    with torch.no_grad():
        for _, layer in adapter_layers(model):
            layer.router.normal_()
            layer.register_forward_hook(lambda module, args, output: inputs.append((module, args[0])))
    row = TofuData(str(small_world)).load("forget10")[0]
    item = encode_qa(tokenizer, row["question"], row["answer"])
    [score] = score_answers(model, [item], tokenizer.pad_token_id, precision="fp32")
    ids = torch.tensor([item.input_ids])
    high = runtime.entropy.is_high(runtime.frozen_output(ids, torch.ones_like(ids)).logits)
    adapted = inputs[-len(adapter_layers(model)):]  # the routed pass comes after the frozen one
    votes = torch.stack([route_weights(x @ m.router.T, high, m.config) for m, x in adapted]).mean(0)
    predicting = slice(item.prompt_length - 1, len(item.input_ids) - 1)
    assert score.route_high.tolist() == high[0, predicting].tolist()
    assert score.route.tolist() == votes.argmax(-1)[0, predicting].tolist()
    assert len(set(score.route.tolist())) > 1


def test_shared_router_sends_forget_text_to_forget_heads_and_retain_text_to_none(tiny_runs, small_world, tmp_path):
    model, _, before, after, facts, _, _ = short_alter_run(
        tiny_runs, small_world, ["train.max_steps=4", "params.lr_b=0.05", "params.router=shared",
                                 "params.forget_heads=2", "params.threshold_quantile=0.7"])
    assert after > before and facts["shared_router"]["answer_accuracy"] > 0.8
    tokenizer = load_model(str(tiny_runs / "target"))[1]
    data = TofuData(str(small_world))
    runtime, routed = model.alter_runtime, {}
    for split in ("forget10", "retain90"):
        items = [encode_qa(tokenizer, r["question"], r["answer"]) for r in data.load(split)[:10]]
        scores = score_answers(model, items, tokenizer.pad_token_id, precision="fp32")
        routed[split] = np.mean(np.concatenate([s.route for s in scores]) > 0)
        ids = torch.tensor([items[0].input_ids])  # the route scoring used is the gate on the frozen running mean
        hidden = runtime.frozen_output(ids, torch.ones_like(ids), hidden=True).hidden_states[-1]
        gate = runtime.shared_router(hidden.cumsum(1) / torch.arange(1, ids.shape[1] + 1)[None, :, None])
        low = ~scores[0].route_high
        assert scores[0].route[low].tolist() == gate[0, items[0].prompt_length - 1 : -1].argmax(-1)[low].tolist()
    assert routed["forget10"] > 0.9 and routed["retain90"] < routed["forget10"] - 0.3
    runtime.save(tmp_path, "tiny-target")
    reloaded, _ = fresh_target(tiny_runs)
    load_alter_adapter(reloaded, tmp_path)
    assert torch.equal(logits_of(reloaded, tokenizer), logits_of(model, tokenizer))


def test_unknown_router_is_an_error(tiny_runs, small_world):
    with pytest.raises(UserError, match="params.router"):
        short_alter_run(tiny_runs, small_world, ["train.max_steps=1", "params.router=global"])


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
    assert (joint["attention_mask"].sum(1) == torch.cat([forget["attention_mask"].sum(1),
                                                         retain["attention_mask"].sum(1)])).all()


def test_alter_refuses_sharded_engines():
    recipe = build_recipe("alter", None, [])
    for engine in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        with pytest.raises(UserError, match="FSDP and DeepSpeed"):
            get_method("alter").runner(None, None, [], [], None, recipe, SimpleNamespace(distributed_type=engine),
                                       None, False, "fp32")


@pytest.mark.parametrize("router", ["shared", "layer"])
def test_losses_read_the_same_positions_when_the_output_layer_skips_prompts(router, tiny_runs, small_world,
                                                                            monkeypatch, random_alter_adapter):
    from alter.methods import alter as alter_method

    model, tokenizer = fresh_target(tiny_runs)
    random_alter_adapter(model, seed=1, router=router)
    data = TofuData(str(small_world))
    encode = lambda rows: [encode_qa(tokenizer, r["question"], r["answer"]) for r in rows]  # noqa: E731
    forget, retain = encode(data.load("forget10")[:8]), encode(data.load("retain90"))
    generator = torch.Generator().manual_seed(0)
    entropies = {kind: [2 * torch.rand(len(item.input_ids), generator=generator) for item in items]
                 for kind, items in (("forget", forget), ("retain", retain))}
    objective = alter_method.ALTERObjective(model.alter_runtime, alter_method.ALTERParams(router=router), entropies,
                                            torch.tensor([0, 1] * 4), threshold=1.0)
    batch = UnlearnBatches(forget, retain, None, 4, 0, tokenizer.pad_token_id).batch(0, 0)

    def losses():
        with torch.no_grad():
            return [objective.phase1(model, batch)[0].item(), *objective.phase2(model, batch)[1].values()]

    assert alter_method.first_answer_position(batch["retain"]["labels"]) > 0  # there are prompt positions to skip
    skipping = losses()
    monkeypatch.setattr(alter_method, "first_answer_position", lambda labels: 0)  # every position, as before
    every_position = losses()
    assert skipping == pytest.approx(every_position, rel=1e-5, abs=1e-6)
