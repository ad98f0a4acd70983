"""Unlearning objectives: each loss against a hand computation on a stub with known probabilities, then two
real steps on a tiny model, adapter isolation, the reference model, and recipe errors."""

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from alter.data.batching import WIDTH_MULTIPLE, UnlearnBatches, collate
from alter.data.formatting import EncodedQA, encode_qa
from alter.data.tofu import TofuData
from alter.errors import UserError
from alter.adapters.lora import attach_lora
from alter.methods import METHOD_NAMES, MODULES, get_method
from alter.methods.base import Reference, mean_nll
from alter.methods.losses import inverse_hinge, masked_kl, masked_nll, masked_npo
from alter.training.finetune import make_accelerator
from alter.training.loop import TrainConfig, train
from alter.training.recipe import build_recipe

VOCAB = 6
rng = np.random.default_rng(11)
MODEL_TABLE = rng.dirichlet(np.ones(VOCAB), size=VOCAB)
REFERENCE_TABLE = rng.dirichlet(np.ones(VOCAB), size=VOCAB)


class BigramStub(torch.nn.Module):
    """Next-token distribution P[current] - known exactly, so every loss can be computed by hand."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(np.log(table), dtype=torch.float32))

    def forward(self, input_ids, attention_mask=None, **_):
        return type("Output", (), {"logits": self.table[input_ids]})()


FORGET = [EncodedQA([0, 1, 2, 3], 2), EncodedQA([4, 5, 1], 1)]  # prompts masked: answers [2, 3] and [5, 1]
RETAIN = [EncodedQA([2, 2, 4, 0], 3)]
IDK = [EncodedQA([0, 1, 5, 5], 2), EncodedQA([4, 0, 3], 1)]


def answer_logprobs(table, item):
    ids = item.input_ids
    return np.array([math.log(table[ids[t - 1], ids[t]]) for t in range(item.prompt_length, len(ids))])


def token_mean_nll(table, items):
    values = np.concatenate([answer_logprobs(table, item) for item in items])
    return -values.mean()


def logsigmoid(x):
    return -np.log1p(np.exp(-x))


def stub_batch():
    source = UnlearnBatches(FORGET, RETAIN, IDK, batch_size=2, seed=0, pad_id=0)
    order = source.forget.indices(0, 0)
    return source.batch(0, 0), [FORGET[i] for i in order], [IDK[i] for i in order]


def loss_of(name):
    """The one loss of a single-loss method (its module's `loss`)."""
    import importlib

    return importlib.import_module(MODULES[name]).loss


LOSS_METHODS = sorted(name for name in METHOD_NAMES if name != "alter")


def run_loss(name, **params):
    method = get_method(name)
    model = BigramStub(REFERENCE_TABLE)
    reference = Reference(model, adapter_based=False)  # frozen copy of the reference table
    with torch.no_grad():
        model.table.copy_(torch.tensor(np.log(MODEL_TABLE)))
    batch, forget, idk = stub_batch()
    loss, _ = loss_of(name)(model, batch, replace(method.params(), **params), reference)
    return loss.item(), forget, idk


def seq_logratio(items):
    return np.array([answer_logprobs(MODEL_TABLE, i).sum() - answer_logprobs(REFERENCE_TABLE, i).sum() for i in items])


def test_gradascent_by_hand():
    loss, forget, _ = run_loss("gradascent")
    assert loss == pytest.approx(-token_mean_nll(MODEL_TABLE, forget), rel=1e-5)


def test_graddiff_by_hand():
    loss, forget, _ = run_loss("graddiff", gamma=1.0, alpha=0.5)
    expected = -token_mean_nll(MODEL_TABLE, forget) + 0.5 * token_mean_nll(MODEL_TABLE, RETAIN)
    assert loss == pytest.approx(expected, rel=1e-5)


def test_graddiff_kl_retain_by_hand():
    loss, forget, _ = run_loss("graddiff", alpha=1.0, retain_loss="kl")
    ids, start = RETAIN[0].input_ids, RETAIN[0].prompt_length
    kls = [sum(REFERENCE_TABLE[ids[t - 1], v] * math.log(REFERENCE_TABLE[ids[t - 1], v] / MODEL_TABLE[ids[t - 1], v])
               for v in range(VOCAB)) for t in range(start, len(ids))]
    assert loss == pytest.approx(-token_mean_nll(MODEL_TABLE, forget) + np.mean(kls), rel=1e-5)


def test_npo_by_hand():
    beta = 0.1
    loss, forget, _ = run_loss("npo", beta=beta, alpha=0.0)
    expected = (-2 / beta * logsigmoid(-beta * seq_logratio(forget))).mean()
    assert loss == pytest.approx(expected, rel=1e-5)


def test_npo_equals_2_ln2_over_beta_at_the_reference():
    method = get_method("npo")
    model = BigramStub(MODEL_TABLE)
    batch, _, _ = stub_batch()
    loss, _ = loss_of("npo")(model, batch, method.params(beta=0.1, alpha=0.0), Reference(model, adapter_based=False))
    assert loss.item() == pytest.approx(2 / 0.1 * math.log(2), rel=1e-5)


def test_simnpo_by_hand():
    beta, gamma, delta = 4.5, 0.125, 0.3
    loss, forget, _ = run_loss("simnpo", beta=beta, gamma=gamma, delta=delta, alpha=1.0)
    per_token = np.array([-answer_logprobs(MODEL_TABLE, i).mean() for i in forget]) - delta
    expected = gamma * (-2 / beta * logsigmoid(beta * per_token)).mean() + token_mean_nll(MODEL_TABLE, RETAIN)
    assert loss == pytest.approx(expected, rel=1e-5)


def test_idknll_by_hand():
    loss, _, idk = run_loss("idknll", alpha=0.0)
    assert loss == pytest.approx(token_mean_nll(MODEL_TABLE, idk), rel=1e-5)


def test_idkdpo_by_hand():
    beta = 0.1
    loss, forget, idk = run_loss("idkdpo", beta=beta, alpha=0.0)
    expected = (-2 / beta * logsigmoid(beta * (seq_logratio(idk) - seq_logratio(forget)))).mean()
    assert loss == pytest.approx(expected, rel=1e-5)


def test_undial_by_hand():
    beta = 10.0
    loss, forget, _ = run_loss("undial", beta=beta, alpha=0.0)
    terms = []
    for item in forget:
        ids = item.input_ids
        for t in range(item.prompt_length, len(ids)):
            teacher = np.log(REFERENCE_TABLE[ids[t - 1]])
            teacher[ids[t]] -= beta
            soft = np.exp(teacher) / np.exp(teacher).sum()
            terms.append(-(soft * np.log(MODEL_TABLE[ids[t - 1]])).sum())
    assert loss == pytest.approx(np.mean(terms), rel=1e-5)


# --- real steps on a tiny model -----------------------------------------------------------------------------


def tiny_batches(tiny_runs, small_world, lora=False, multiple=1):
    from alter.models import load_model

    model, tokenizer = load_model(str(tiny_runs / "target"))
    data = TofuData(str(small_world))
    encode = lambda rows: [encode_qa(tokenizer, r["question"], r["answer"]) for r in rows]  # noqa: E731
    forget_rows = data.load("forget10")
    idk = [encode_qa(tokenizer, r["question"], "I don't know.") for r in forget_rows]
    source = UnlearnBatches(encode(forget_rows), encode(data.load("retain90")), idk, 8, 0, tokenizer.pad_token_id,
                            multiple=multiple)
    if lora:
        model = attach_lora(model, 4, 8)
    return model, source


def forget_measure(name, model, batch, reference, params):
    """The quantity each method should move, and whether it should go up."""
    if name in ("idknll", "idkdpo"):
        return mean_nll(model, batch["idk"]).item(), False
    if name == "rmu":
        loss, logs = loss_of(name)(model, batch, params, reference)
        return logs["forget_loss"], False
    return mean_nll(model, batch["forget"]).item(), True


@pytest.mark.parametrize("name", LOSS_METHODS)
def test_two_steps_move_the_forget_loss_the_intended_way(name, tiny_runs, small_world):
    torch.manual_seed(0)
    method = get_method(name)
    model, source = tiny_batches(tiny_runs, small_world)
    params = method.params()
    if name == "rmu":
        params = replace(params, steering_coeff=20.0, alpha=1.0)
    reference = Reference(model, adapter_based=False)
    batch = source.batch(0, 0)
    with torch.no_grad():
        before, up = forget_measure(name, model, batch, reference, params)
    config = TrainConfig(epochs=1, learning_rate=1e-3, max_steps=2, warmup_ratio=0.0, scheduler="constant",
                         batch_size=8, precision="fp32")
    train(model, lambda m, b: loss_of(name)(m, b, params, reference), FixedBatch(batch), config,
          make_accelerator("fp32"))
    with torch.no_grad():
        after, _ = forget_measure(name, model, batch, reference, params)
    assert (after > before) if up else (after < before), (before, after)


@pytest.mark.parametrize("name", LOSS_METHODS)
def test_each_loss_is_the_same_on_batches_padded_to_the_width_multiple(name, tiny_runs, small_world,
                                                                       trimmed):
    method = get_method(name)
    model, source = tiny_batches(tiny_runs, small_world, multiple=WIDTH_MULTIPLE)
    reference = Reference(model, adapter_based=False)
    padded = source.batch(0, 0)
    parts = [key for key, value in padded.items() if isinstance(value, dict)]
    assert all(padded[key]["input_ids"].shape[1] % WIDTH_MULTIPLE == 0 for key in parts)
    batch = trimmed(padded)
    assert any(batch[key]["input_ids"].shape[1] < padded[key]["input_ids"].shape[1] for key in parts)
    losses = []
    with torch.no_grad():
        for each in (padded, batch):
            torch.manual_seed(0)
            losses.append(loss_of(name)(model, each, method.params(), reference)[0].item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-6)


def test_canonical_rmu_trains_only_the_mlp_output_projections_up_to_the_steered_layer(tiny_runs, small_world):
    from alter.methods.base import LoraChoice, Setup
    from alter.methods.rmu import canonical_overrides

    model, source = tiny_batches(tiny_runs, small_world)
    params = build_recipe("rmu", None, ["params.update=canonical", "params.layer=1"]).params
    setup = Setup(model, None, [], [], None, source, params, 1e-3, 0, "fp32", LoraChoice())
    trained = get_method("rmu").prepare(setup).phases[0].param_groups[0]["params"]
    names = {name for name, p in model.named_parameters() if any(p is q for q in trained)}
    assert names == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}
    folder = Path(__file__).resolve().parents[1] / "configs" / "unlearn"
    canonical = build_recipe(None, str(folder / "rmu-canonical.yaml"), [])
    assert yaml.safe_load((folder / "rmu-canonical.yaml").read_text()) == canonical.as_dict()
    assert (canonical.params.update, canonical.params.layer, canonical.learning_rate) == ("canonical", 7, 5e-5)
    assert canonical.as_dict() == build_recipe("rmu", None, canonical_overrides()).as_dict()
    with pytest.raises(UserError, match="params.update"):
        build_recipe("rmu", None, ["params.update=some"])


class FixedBatch:
    def __init__(self, batch):
        self.fixed = batch

    def batches_per_epoch(self):
        return 1

    def batch(self, epoch, index):
        return self.fixed


def test_adapter_training_leaves_base_weights_bitwise_unchanged_and_reference_is_the_frozen_model(tiny_runs, small_world):
    model, source = tiny_batches(tiny_runs, small_world, lora=True)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    batch = source.batch(0, 0)
    with torch.no_grad(), model.disable_adapter():
        frozen_logits = model(input_ids=batch["forget"]["input_ids"],
                              attention_mask=batch["forget"]["attention_mask"]).logits.clone()
    method = get_method("npo")
    reference = Reference(model, adapter_based=True)
    assert reference.parameter_bytes() == 0  # no second copy of the weights
    config = TrainConfig(max_steps=2, learning_rate=1e-2, warmup_ratio=0.0, precision="fp32")
    train(model, lambda m, b: loss_of("npo")(m, b, method.params(), reference), FixedBatch(batch), config,
          make_accelerator("fp32"))
    for name, param in model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, base[name]), name
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in model.named_parameters() if "lora_B" in n)
    reference_logits = reference.forward(model, batch["forget"]).logits
    assert torch.equal(reference_logits, frozen_logits)
    adapted = model(input_ids=batch["forget"]["input_ids"], attention_mask=batch["forget"]["attention_mask"]).logits
    assert not torch.allclose(adapted, frozen_logits)


def test_retain_sampling_differs_across_ranks_and_is_seeded():
    items = [EncodedQA([1, 2, 3], 1) for _ in range(50)]
    rank0 = UnlearnBatches(items, items, None, 4, seed=1, pad_id=0, rank=0, world=2)
    rank1 = UnlearnBatches(items, items, None, 4, seed=1, pad_id=0, rank=1, world=2)
    assert rank0.retain_indices(0, 0) != rank1.retain_indices(0, 0)
    assert rank0.retain_indices(0, 0) == UnlearnBatches(items, items, None, 4, 1, 0, 0, 2).retain_indices(0, 0)
    assert not set(rank0.forget.indices(0, 0)) & set(rank1.forget.indices(0, 0))


# --- recipes ------------------------------------------------------------------------------------------------


def test_shipped_recipes_equal_the_code_defaults():
    from alter.methods.alter.params import PAPER, PAPER_TRAIN

    folder = Path(__file__).resolve().parents[1] / "configs" / "unlearn"
    for name in METHOD_NAMES:
        path = folder / f"{name}.yaml"
        assert yaml.safe_load(path.read_text()) == build_recipe(None, str(path), []).as_dict()
        assert build_recipe(None, str(path), []).as_dict() == build_recipe(name, None, []).as_dict()
    paper = build_recipe(None, str(folder / "alter-paper.yaml"), [])
    assert yaml.safe_load((folder / "alter-paper.yaml").read_text()) == paper.as_dict()
    assert {key: getattr(paper.params, key) for key in PAPER} == PAPER
    assert {key: getattr(paper.train, key) for key in PAPER_TRAIN} == PAPER_TRAIN


def test_set_overrides_and_type_coercion():
    recipe = build_recipe("npo", None, ["train.learning_rate=1e-4", "params.beta=0.5", "lora.enabled=true",
                                        "train.max_steps=3"])
    assert recipe.train.learning_rate == 1e-4 and recipe.params.beta == 0.5 and recipe.lora.enabled
    assert recipe.learning_rate == recipe.lora.learning_rate and recipe.train.max_steps == 3


@pytest.mark.parametrize("overrides,message", [
    (["params.betta=0.1"], "unknown key params.betta"),
    (["train.epochs=many"], "train.epochs must be float"),
    (["lora.enabled=3"], "lora.enabled must be bool"),
    (["train.batch_size=2.5"], "train.batch_size must be int"),
    (["optim.lr=1"], "unknown section 'optim'"),
    (["learning_rate=1"], "expected section.key=value"),
])
def test_recipe_errors_are_clear(overrides, message):
    with pytest.raises(UserError, match=message):
        build_recipe("npo", None, overrides)


def test_unknown_method_and_bad_config_file(tmp_path):
    with pytest.raises(UserError, match="unknown method 'npp'"):
        build_recipe("npp", None, [])
    with pytest.raises(UserError, match="recipe file not found"):
        build_recipe("npo", str(tmp_path / "none.yaml"), [])
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [npo\n")
    with pytest.raises(UserError, match="malformed YAML"):
        build_recipe(None, str(bad), [])


def test_output_layer_on_answer_positions_only_changes_no_loss(tiny_runs, small_world, monkeypatch):
    from alter.methods import base
    from alter.models import load_model, outputs

    model, tokenizer = load_model(str(tiny_runs / "target"))
    rows = TofuData(str(small_world)).load("forget10")[:6]
    # prompts longer than WIDTH_MULTIPLE tokens, so the window starts after some of them
    preamble = "Answer the following question about the author in one sentence, please. "
    batch = collate([encode_qa(tokenizer, preamble + r["question"], r["answer"]) for r in rows],
                    tokenizer.pad_token_id)
    assert base.first_answer_position(batch["labels"]) > 0
    reference = base.Reference(model, adapter_based=False)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a reference that differs from the model, so the KL is not 0 both ways
        for parameter in reference.copy.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        windowed = [base.sequence_nll(model, batch)[0], base.kl_to_reference(model, batch, reference)]
        monkeypatch.setattr(outputs, "accepts_logits_to_keep", lambda _: False)
        full = [base.sequence_nll(model, batch)[0], base.kl_to_reference(model, batch, reference)]
    torch.testing.assert_close(windowed[0], full[0], rtol=1e-6, atol=1e-5)
    assert windowed[1].item() > 0.01
    assert windowed[1].item() == pytest.approx(full[1].item(), rel=1e-5)
    logits, targets, mask = base.answer_logits(model, batch)
    assert logits.shape[1] < batch["input_ids"].shape[1] - 1  # the prompt positions were skipped
    assert int(mask.sum()) == int((batch["labels"] != -100).sum())


# --- the token losses ------------------------------------------------------------------------------------------


def test_inverse_hinge_masked_nll_and_kl_against_hand_computations():
    logits = torch.log(torch.tensor([[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]]))
    targets = torch.tensor([[0, 2, 1]])
    mask = torch.tensor([[True, True, False]])
    # position 0: 1 + 0.6 - 0.3; position 1: 1 + 0.3 - 0.5; position 2 masked out
    assert inverse_hinge(logits, targets, mask).item() == pytest.approx(((1.3) + (0.8)) / 2, rel=1e-5)
    pull_second = torch.tensor([[1.0, -1.0, 1.0]])  # position 1 pulled back up: its term is negated
    assert inverse_hinge(logits, targets, mask, direction=pull_second).item() == pytest.approx((1.3 - 0.8) / 2)
    assert masked_nll(logits, targets, mask).item() == pytest.approx(-(math.log(0.6) + math.log(0.3)) / 2, rel=1e-5)
    reference = torch.log(torch.tensor([[[0.2, 0.2, 0.6], [0.2, 0.5, 0.3], [1 / 3, 1 / 3, 1 / 3]]]))
    p, q = [0.2, 0.2, 0.6], [0.6, 0.3, 0.1]
    kl0 = sum(a * math.log(a / b) for a, b in zip(p, q))
    assert masked_kl(reference, logits, mask).item() == pytest.approx(kl0 / 2, rel=1e-5)  # position 1: KL 0
    nothing = torch.zeros_like(mask)
    for loss in (inverse_hinge(logits, targets, nothing), masked_nll(logits, targets, nothing),
                 masked_kl(reference, logits, nothing)):
        assert loss.item() == 0.0


def test_masked_npo_against_a_hand_computation():
    """Per row, the log-ratio summed over its masked positions; rows without one are left out of the mean."""
    logits = torch.log(torch.tensor([[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]], [[0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]]))
    reference = torch.log(torch.tensor([[[0.2, 0.2, 0.6], [0.2, 0.5, 0.3]], [[0.5, 0.25, 0.25], [0.3, 0.3, 0.4]]]))
    targets = torch.tensor([[0, 1], [2, -100]])
    beta = 0.5
    row0 = math.log(0.6 / 0.2) + math.log(0.5 / 0.5)
    row1 = math.log(0.8 / 0.25)

    def npo(log_ratio):
        return -2.0 / beta * math.log(1.0 / (1.0 + math.exp(beta * log_ratio)))

    both = torch.tensor([[True, True], [True, False]])
    assert masked_npo(reference, logits, targets, both, beta).item() == pytest.approx((npo(row0) + npo(row1)) / 2,
                                                                                      rel=1e-5)
    first_row_only = torch.tensor([[True, True], [False, False]])
    assert masked_npo(reference, logits, targets, first_row_only, beta).item() == pytest.approx(npo(row0), rel=1e-5)
    assert masked_npo(reference, reference, targets, both, beta).item() == pytest.approx(2.0 / beta * math.log(2))
    assert masked_npo(reference, logits, targets, torch.zeros_like(both), beta).item() == 0.0
    # the forget floor's directions: a row pulled back up has its term negated, a row left alone counts as 0
    pulled = masked_npo(reference, logits, targets, both, beta, direction=torch.tensor([1.0, -1.0]))
    assert pulled.item() == pytest.approx((npo(row0) - npo(row1)) / 2, rel=1e-5)
    alone = masked_npo(reference, logits, targets, first_row_only, beta, direction=torch.tensor([0.0, 1.0]))
    assert alone.item() == 0.0


def test_a_loss_method_plans_one_phase_on_all_weights_or_on_a_lora_adapter(tiny_runs, small_world):
    from alter.methods.base import LoraChoice, Setup

    for lora in (False, True):
        model, source = tiny_batches(tiny_runs, small_world)
        recipe = build_recipe("npo", None, [])
        setup = Setup(model, None, [], [], None, source, recipe.params, 1e-4, 0, "fp32", LoraChoice(enabled=lora))
        plan = get_method("npo").prepare(setup)
        (phase,) = plan.phases
        trained = sum(p.numel() for group in phase.param_groups for p in group["params"])
        total = sum(p.numel() for p in plan.model.parameters())
        assert plan.output == ("adapter" if lora else "model")
        assert (trained < total / 5) if lora else (trained == total)
        assert phase.param_groups[0]["lr"] == 1e-4
        assert plan.facts["reference_copy_mb"] == (0 if lora else pytest.approx(total * 4 / 2**20, rel=0.01))
