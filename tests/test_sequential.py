"""ALTER's sequential forget requests, under both routers that take them: a request adds heads and what switches them
on (content: gate rows; names: its subjects' names) and trains only them; removing a request gives back exactly what
the adapter was without it."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from alter.adapters.model import AlterModel, remove_request
from alter.cli.main import main
from alter.data.formatting import encode_qa
from alter.data.sources import UnlearnData
from alter.data.tofu import TofuData
from alter.evaluation.scoring import score_answers
from alter.models import load_model
from alter.training.recipe import build_recipe
from alter.training.loop import TrainResult
from alter.training.unlearn import combined, unlearn

QUESTIONS_PER_AUTHOR = 20


@pytest.fixture(scope="module", params=["content", "names"])
def two_requests(request, tiny_runs, small_world, tmp_path_factory):
    """Request 1 forgets the last author, request 2 (added to it) the one before; both on the tiny target. With
    'names' the rows say whose they are, so `router: auto` picks the names gate; without, the content gate."""
    rows = TofuData(str(small_world)).load("full")
    authors = [rows[i : i + QUESTIONS_PER_AUTHOR] for i in range(0, len(rows), QUESTIONS_PER_AUTHOR)]
    retain = [row for author in authors[:-2] for row in author]
    root = tmp_path_factory.mktemp(f"requests-{request.param}")
    settings = ["train.precision=fp32", "train.warmup_ratio=0", "train.max_steps=4", "train.context_variants=1",
                "params.lr_b=0.05", "params.forget_heads=1", "params.threshold_quantile=0.7"]
    target = str(tiny_runs / "target")

    def data(author: list[dict], name: str) -> UnlearnData:
        groups = [0] * len(author) if request.param == "names" else None
        return UnlearnData(author, retain, {}, name, groups=groups)

    first = unlearn(target, data(authors[-1], "r1"), build_recipe("alter", None, settings), str(root / "r1"))
    second = unlearn(target, data(authors[-2], "r2"),
                     build_recipe("alter", None, [*settings, f"params.extend={root / 'r1'}"]), str(root / "r12"))
    assert first["alter"]["router"] == request.param
    return root, target, authors, first, second


def logits(model_dir: str, adapter, texts: list[str]) -> list[torch.Tensor]:
    model, tokenizer = load_model(model_dir)
    AlterModel.load(model, adapter)
    out = []
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            out.append(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits)
    return out


def test_a_request_trains_only_its_own_heads(two_requests):
    root, _, _, _, second = two_requests
    before, after = load_file(str(root / "r1" / "alter_adapter.safetensors")), \
        load_file(str(root / "r12" / "alter_adapter.safetensors"))
    assert set(before) == set(after)
    for key, value in before.items():
        if key.endswith(".forget_B") or key.startswith("gate.detector."):  # (no gate tensors under names)
            assert torch.equal(after[key][: len(value)], value), key  # earlier heads and gate rows bitwise kept
        else:
            assert torch.equal(after[key], value), key  # A and the retain head bitwise kept
    new_heads = [after[k][len(before[k]) :] for k in after if k.endswith(".forget_B")]
    assert all(len(h) == 1 for h in new_heads) and any(h.abs().sum() > 0 for h in new_heads)
    config = json.loads((root / "r12" / "alter_config.json").read_text())["config"]
    assert config["head_requests"] == [1, 2] and config["forget_heads"] == 2
    if config["router"] == "names":  # each subject's name after a space and at a text's start
        assert config["name_requests"] == [1, 1, 2, 2] and second["alter"]["gate"]["forget_prompts_named"] > 0.5
    assert second["alter"]["request"] == 2


def test_the_wall_time_counts_alters_preparation_and_every_phase(two_requests):
    first = two_requests[3]  # the frozen passes and fits are part of what unlearning costs
    assert 0 < first["prepare_seconds"] < first["wall_seconds"]
    phases = [TrainResult(2, 10, 1.5, 100.0), TrainResult(3, 20, 2.25, 120.0)]
    total = combined(phases, ["phase1", "phase2"], 4.0)
    assert total.wall_seconds == 7.75 and total.peak_memory_mb == 120.0 and total.steps == 5


def test_a_request_forgets_its_own_items(two_requests):
    root, target, authors, _, _ = two_requests
    _, tokenizer = load_model(target)
    items = [encode_qa(tokenizer, r["question"], r["answer"]) for r in authors[-2]]

    def nll(adapter):
        model, _ = load_model(target)
        AlterModel.load(model, adapter)
        return np.mean([s.nll for s in score_answers(model, items, tokenizer.pad_token_id, precision="fp32")])

    assert nll(root / "r12") > nll(root / "r1") + 0.05  # request 2's answers less likely once it is added


def test_removing_the_last_request_gives_back_the_earlier_adapter_bitwise(two_requests):
    root, target, authors, _, _ = two_requests
    remove_request(root / "r12", 2, root / "r12-without-2")
    earlier, removed = load_file(str(root / "r1" / "alter_adapter.safetensors")), \
        load_file(str(root / "r12-without-2" / "alter_adapter.safetensors"))
    assert set(earlier) == set(removed) and all(torch.equal(earlier[k], removed[k]) for k in earlier)
    texts = [authors[-1][0]["question"], authors[-2][0]["question"], authors[0][0]["question"]]
    for a, b in zip(logits(target, root / "r1", texts), logits(target, root / "r12-without-2", texts)):
        assert torch.equal(a, b)


def test_removing_an_earlier_request_changes_only_where_its_gate_fires(two_requests):
    root, target, authors, _, _ = two_requests
    remove_request(root / "r12", 1, root / "r12-without-1")
    assert json.loads((root / "r12-without-1" / "alter_config.json").read_text())["config"]["head_requests"] == [2]
    model, tokenizer = load_model(target)
    adapter = AlterModel.load(model, root / "r12")
    texts = [row["question"] + " " + row["answer"] for author in authors for row in author[:3]]
    fires_1 = [request_1_fires(adapter, model, torch.tensor([tokenizer(text)["input_ids"]])) for text in texts]
    assert any(fires_1) and not all(fires_1)
    for fired, a, b in zip(fires_1, logits(target, root / "r12", texts), logits(target, root / "r12-without-1", texts)):
        assert torch.equal(a, b) != fired  # identical exactly where request 1's gate stays off


def request_1_fires(adapter: AlterModel, model, ids: torch.Tensor) -> bool:
    """Does request 1's gate row (content) or one of its names switch its head (head 0) on anywhere in `ids`?"""
    if adapter.config.router == "names":
        return bool(adapter.names.on(ids, None, None)[0][0, :, 0].any())
    with torch.no_grad(), adapter.disabled():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[adapter.gate_layer]
    return bool((adapter.gate.scores(hidden, None)[0, :, 0] > 0).any())


def test_requests_command_lists_and_refuses_bad_requests(two_requests, tmp_path, capsys):
    root = two_requests[0]
    assert main(["requests", str(root / "r12")]) == 0
    assert capsys.readouterr().out.splitlines() == ["request 1: 1 forget heads", "request 2: 1 forget heads"]
    assert main(["requests", str(root / "r12"), "--remove", "3", "--out", str(tmp_path / "x")]) == 2
    assert "holds requests [1, 2], not 3" in capsys.readouterr().err
    assert main(["requests", str(root / "r1"), "--remove", "1", "--out", str(tmp_path / "y")]) == 2
    assert "only request" in capsys.readouterr().err and not (tmp_path / "y").exists()
    assert main(["requests", str(tmp_path), "--remove", "1", "--out", str(tmp_path / "z")]) == 2
    assert main(["requests", str(root / "r12"), "--remove", "2", "--out", str(root / "r1")]) == 2
    assert "already holds an adapter" in capsys.readouterr().err
