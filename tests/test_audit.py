"""`alter audit` and `alter export`: the attacks, the quantiser, and exports that must behave like the adapted model."""

import json

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from alter.models import load_model
from alter.models.quantize import fake_quantise, rtn
from alter.pipelines.audit import AuditPlan, attack_names, run_audit, split_forget
from alter.pipelines.export import ExportPlan, export

PROMPT = "Question: Where was the author born?\nAnswer: "
TOLERANCE = 0.05  # a distilled export's answer probabilities, per item, against base + adapter


def logits_of(model, tokenizer, text=PROMPT):
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def test_round_to_nearest_matches_a_numpy_quantiser_per_channel_and_per_group():
    weight = torch.randn(6, 256, generator=torch.Generator().manual_seed(0))
    for bits, group in ((8, None), (4, None), (4, 128), (8, 128)):
        quantised = rtn(weight, bits, group).numpy()
        blocks = weight.numpy().reshape(6, -1, group or 256)
        levels = 2 ** (bits - 1) - 1
        scale = np.abs(blocks).max(-1, keepdims=True) / levels
        expected = (np.clip(np.round(blocks / scale), -levels - 1, levels) * scale).reshape(6, 256)
        np.testing.assert_allclose(quantised, expected, rtol=1e-5, atol=1e-6)
        assert len(np.unique(quantised[0, : group or 256])) <= 2 * levels + 2


def test_quantisation_leaves_adapter_weights_alone(tiny_runs, random_alter_adapter):
    model, _ = load_model(str(tiny_runs / "target"))
    adapter = random_alter_adapter(model, seed=1, router="content")
    heads = [layer.forget_B.detach().clone() for _, layer in adapter.layers]
    base = adapter.layers[0][1].base.weight.detach().clone()
    fake_quantise(model, 4, None)
    assert all(torch.equal(before, layer.forget_B) for before, (_, layer) in zip(heads, adapter.layers))
    assert not torch.equal(base, adapter.layers[0][1].base.weight)


def test_relearning_part_and_measured_part_split_by_subject():
    rows = [{"question": f"q{i}", "answer": "a", "author": i // 20} for i in range(60)]
    relearn, measured = split_forget(rows, "not-a-folder")
    assert len(relearn) == 20 and len(measured) == 40 and not {id(r) for r in relearn} & {id(r) for r in measured}


def test_attack_names_follow_the_plan(tmp_path):
    plan = AuditPlan("m", "adapter", "d", tmp_path, relearn_lrs=(1e-5,), quantisation=((4, 128),))
    assert attack_names(plan) == ["none", "relearn_lr1e-05", "quant_int4_g128", "adapter_removed"]


@pytest.fixture(scope="module")
def self_audit(tiny_runs, small_world, tmp_path_factory):
    """The target audited as if it were the unlearned model: every attack must find 'undone' exactly 1."""
    out = tmp_path_factory.mktemp("audit")
    target, retain = str(tiny_runs / "target"), str(tiny_runs / "retain")
    plan = AuditPlan(target, None, str(small_world), out, "forget10", target, retain, relearn_lrs=(1e-3,),
                     relearn_steps=3, quantisation=((4, None),), settings={"limit": 8, "max_new_tokens": 8})
    return run_audit(plan), out


def test_an_audit_of_the_target_itself_finds_everything_undone(self_audit):
    audit, out = self_audit
    assert set(audit["attacks"]) == {"none", "relearn_lr0.001", "quant_int4_channel"}
    for attack, result in audit["attacks"].items():
        assert result["model"] == result["target"], attack  # same model, same attack, same numbers
        assert result["undone"] == pytest.approx(1.0), attack
    relearned, clean = audit["attacks"]["relearn_lr0.001"], audit["attacks"]["none"]
    # relearning trained: the retain model's answers on the measured author moved
    assert relearned["retain"]["held_out_prob"] != clean["retain"]["held_out_prob"]
    assert json.loads((out / "AUDIT.json").read_text())["lines"] == audit["lines"]
    assert "| quant_int4_channel | forget_prob |" in (out / "AUDIT.md").read_text()


def gap_share(clean: dict, attacked: dict, key: str) -> float:
    """How far the retain model moved under an attack, as a share of the clean target-to-retain gap."""
    gap = clean["target"][key] - clean["retain"][key]
    return (attacked["retain"][key] - clean["retain"][key]) / gap


def test_a_model_that_never_saw_the_facts_does_not_gain_them_from_quantisation(self_audit):
    attacks = self_audit[0]["attacks"]
    assert attacks["none"]["target"]["forget_prob"] - attacks["none"]["retain"]["forget_prob"] > 0.1  # a gap to share
    assert attacks["quant_int4_channel"]["retain"]["forget_prob"] != attacks["none"]["retain"]["forget_prob"]
    share = gap_share(attacks["none"], attacks["quant_int4_channel"], "forget_prob")
    assert share < 0.05


def test_relearning_one_author_does_not_teach_the_retain_model_another_authors_facts(self_audit):
    """The retain model, relearning the first author, moves on the second by at most 15% of the gap (-21% here)."""
    attacks = self_audit[0]["attacks"]
    share = gap_share(attacks["none"], attacks["relearn_lr0.001"], "held_out_prob")
    assert share < 0.15


def test_undone_is_the_share_of_the_retain_to_target_gap(self_audit):
    result = self_audit[0]["attacks"]["quant_int4_channel"]
    model, target, retain = (result[n]["forget_prob"] for n in ("model", "target", "retain"))
    assert result["undone"] == pytest.approx((model - retain) / (target - retain))


def test_removing_a_fresh_alter_adapter_gives_the_base_back(tiny_runs, small_world, tmp_path):
    from alter.adapters.config import AlterConfig
    from alter.adapters.model import AlterModel

    target = str(tiny_runs / "target")
    model, _ = load_model(target)
    AlterModel(model, AlterConfig(forget_heads=2, router="content")).save(tmp_path / "adapter", target,
                                                                           clusters={"0": 0})
    plan = AuditPlan(target, str(tmp_path / "adapter"), str(small_world), tmp_path / "out", relearn_lrs=(),
                     quantisation=(), settings={"limit": 4, "max_new_tokens": 8})
    audit = run_audit(plan)
    removed, attached = audit["attacks"]["adapter_removed"]["model"], audit["attacks"]["none"]["model"]
    assert removed == pytest.approx({k: v for k, v in attached.items() if not k.endswith("gate_rate")}, rel=1e-5)
    assert any(line.startswith("adapter removed") for line in audit["lines"])


def test_export_folds_an_ungated_alter_adapter_exactly(tiny_runs, tmp_path, random_alter_adapter):
    target = str(tiny_runs / "target")
    model, tokenizer = load_model(target)
    adapter = random_alter_adapter(model, seed=2, router="none")
    adapter.save(tmp_path / "adapter", target, clusters={"0": 0})
    expected = logits_of(model, tokenizer)
    manifest = export(ExportPlan(target, str(tmp_path / "adapter"), str(tmp_path / "export")))
    exported, _ = load_model(str(tmp_path / "export"))
    assert manifest["method"] == "folded ungated ALTER heads"
    assert not any("forget_B" in name for name, _ in exported.named_parameters())
    torch.testing.assert_close(logits_of(exported, tokenizer), expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(expected, logits_of(load_model(target)[0], tokenizer), atol=1e-3)


def test_export_merges_a_peft_lora_adapter(tiny_runs, tmp_path):
    target = str(tiny_runs / "target")
    model, tokenizer = load_model(target)
    lora = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    expected = logits_of(lora, tokenizer)
    lora.save_pretrained(tmp_path / "lora")
    export(ExportPlan(target, str(tmp_path / "lora"), str(tmp_path / "export")))
    exported, _ = load_model(str(tmp_path / "export"))
    torch.testing.assert_close(logits_of(exported, tokenizer), expected, rtol=1e-4, atol=1e-4)


def test_a_gated_alter_adapter_is_distilled_within_a_stated_tolerance(tiny_runs, small_world, tmp_path,
                                                                      random_alter_adapter):
    from alter.data.formatting import encode_qa
    from alter.data.tofu import TofuData
    from alter.evaluation.scoring import score_answers

    target = str(tiny_runs / "target")
    model, tokenizer = load_model(target)
    adapter = random_alter_adapter(model, seed=4, router="content", gate_bias=5.0)
    with torch.no_grad():  # heads strong enough to move the answers
        for _, layer in adapter.layers:
            layer.forget_B.mul_(4)
    adapter.save(tmp_path / "adapter", target, clusters={"0": 0})
    manifest = export(ExportPlan(target, str(tmp_path / "adapter"), str(tmp_path / "export"), data=str(small_world),
                                 epochs=3, learning_rate=1e-3, retain_items=8))
    fidelity = manifest["distillation"]["fidelity"]
    assert manifest["method"] == "distilled from the gated ALTER adapter"
    assert (tmp_path / "export" / "model.safetensors").is_file()
    base, _ = load_model(target)
    forget = [encode_qa(tokenizer, r["question"], r["answer"]) for r in TofuData(str(small_world)).load("forget10")]
    base_prob = float(np.mean([np.exp(-s.nll) for s in score_answers(base, forget, tokenizer.pad_token_id)]))
    adapted = fidelity["forget_prob"]["adapted"]
    assert adapted < base_prob - TOLERANCE and adapted > 0.02  # the answers move, but not to nothing: a real match
    for name, measured in fidelity.items():
        assert measured["mean_abs_difference"] < TOLERANCE, (name, measured)


def test_bench_audit_table_shows_each_attack_per_run():
    from alter.pipelines.bench import audit_table

    rows = {"alter": {"audit_relearn_lr1e-05_undone": 0.25, "audit_quant_int4_channel_undone": -0.5},
            "npo": {"audit_relearn_lr1e-05_undone": 1.0}, "target": {}, "retain": {}}
    lines = audit_table(rows).splitlines()
    assert lines[2] == "| run | relearn_lr1e-05 | quant_int4_channel |"
    assert lines[4:] == ["| alter | 0.25 | -0.5 |", "| npo | 1 | - |"]
    assert audit_table({"alter": {}}) == ""


def test_verdict_lines_give_the_share_back_and_how_the_models_own_retain_answers_moved():
    from alter.pipelines.audit import verdict_lines

    def entry(model_forget, model_retain):
        return {"model": {"forget_prob": model_forget, "retain_prob": model_retain},
                "target": {"forget_prob": 0.9, "retain_prob": 0.5}, "retain": {"forget_prob": 0.1, "retain_prob": 0.8}}

    attacks = {"none": {**entry(0.1, 0.7), "undone": 0.0}, "quant_int4_channel": {**entry(0.5, 0.6), "undone": 0.5}}
    assert verdict_lines({"attacks": attacks}) == [
        "none: 0% of the forgotten probability is back",
        "quant_int4_channel: 50% of the forgotten probability is back; the model's retain answers move -0.100"]


def test_audit_table_puts_every_audit_of_a_world_in_one_table_per_attack():
    from alter.pipelines.audit import compare_markdown

    def audit(forget, undone):
        return {"attacks": {"quant_int4_channel": {
            "model": {"forget_prob": forget, "retain_prob": 0.6}, "undone": undone,
            "target": {"forget_prob": 0.9, "retain_prob": 0.5}, "retain": {"forget_prob": 0.1, "retain_prob": 0.8}}}}

    lines = compare_markdown({"npo": audit(0.5, 0.5), "rmu": audit(0.9, 1.0)}).splitlines()
    assert lines[0] == "**quant_int4_channel**"
    assert lines[4:] == ["| target | 0.900 | - | 0.500 | - |", "| retain | 0.100 | - | 0.800 | - |",
                         "| npo | 0.500 | 0.50 | 0.600 | - |", "| rmu | 0.900 | 1.00 | 0.600 | - |"]
