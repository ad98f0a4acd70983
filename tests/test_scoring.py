"""The scoring pass against a stub model whose next-token distribution is known exactly."""

import numpy as np
import pytest
import torch

from alter.data.formatting import EncodedQA
from alter.evaluation.scoring import score_answers

VOCAB = 5
rng = np.random.default_rng(7)
TRANSITIONS = rng.dirichlet(np.ones(VOCAB), size=VOCAB)  # P[next | current]


class BigramStub(torch.nn.Module):
    """logits at position t = log P[. | token t]: a model with fixed, known next-token probabilities."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(np.log(TRANSITIONS), dtype=torch.float32))

    def forward(self, input_ids, attention_mask=None):
        class Output:
            pass

        output = Output()
        output.logits = self.table[input_ids]
        return output


def expected(item: EncodedQA):
    ids = item.input_ids
    rows = [TRANSITIONS[ids[t - 1]] for t in range(item.prompt_length, len(ids))]
    targets = ids[item.prompt_length :]
    logprobs = np.array([np.log(row[y]) for row, y in zip(rows, targets)])
    matches = np.array([row.argmax() == y for row, y in zip(rows, targets)])
    mean = np.array([(row * np.log(row)).sum() for row in rows])
    std = np.array([np.sqrt((row * (np.log(row) - m) ** 2).sum()) for row, m in zip(rows, mean)])
    return logprobs, matches, mean, std


def test_scores_equal_the_known_distribution_with_padding_and_batching():
    items = [EncodedQA([0, 1, 2, 3, 4], 2), EncodedQA([4, 3, 2], 1), EncodedQA([1, 1, 0, 2, 4, 3, 1], 4),
             EncodedQA([2, 0], 1)]
    pad_id = 3  # a real token id used as pad: must not hide real tokens
    scores = score_answers(BigramStub(), items, pad_id=pad_id, batch_size=3)
    for item, score in zip(items, scores):
        logprobs, matches, mean, std = expected(item)
        np.testing.assert_allclose(score.logprobs, logprobs, rtol=1e-5)
        np.testing.assert_array_equal(score.argmax_match, matches)
        np.testing.assert_allclose(score.expected_logprob, mean, rtol=1e-5)
        np.testing.assert_allclose(score.std_logprob, std, rtol=1e-4)
        assert score.nll == pytest.approx(-logprobs.mean(), rel=1e-5)


def assert_same_scores(left, right, atol):
    assert len(left) == len(right)
    for a, b in zip(left, right):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=atol)
        np.testing.assert_allclose(a.expected_logprob, b.expected_logprob, atol=atol)
        np.testing.assert_array_equal(a.targets, b.targets)


def shared_prompt_items(tokenizer):
    """Several answers per question, of different lengths, in mixed order, as the TOFU suite scores them."""
    from alter.data.formatting import encode_qa

    pairs = [("What is the capital of France?", "Paris is the capital."),
             ("Who wrote the play Hamlet?", "William Shakespeare wrote it around 1600."),
             ("What is the capital of France?", "Lyon."),
             ("Who wrote the play Hamlet?", "Christopher Marlowe, some say, though few scholars agree with that."),
             ("What is the capital of France?", "It is Marseille, on the southern coast of the country."),
             ("Name a prime number.", "Seven.")]
    return [encode_qa(tokenizer, q, a) for q, a in pairs]


def test_shared_prompt_scores_equal_whole_sequence_scores(tiny_runs):
    from alter.evaluation import scoring
    from alter.models import load_model

    model, tokenizer = load_model(str(tiny_runs / "target"))
    items = shared_prompt_items(tokenizer)
    shared = scoring._score_sharing_prompts(model, items, tokenizer.pad_token_id, 2, "fp32", None)
    whole = scoring._score_whole_sequences(model, items, tokenizer.pad_token_id, 2, "fp32", None)
    assert_same_scores(shared, whole, atol=1e-5)
    assert scoring.score_answers(model, items, tokenizer.pad_token_id)[3].logprobs.tolist() == shared[3].logprobs.tolist()


@pytest.mark.slow
def test_shared_prompts_and_answer_only_output_layer_change_nothing(smollm2, monkeypatch):
    from alter.evaluation import scoring
    from alter.models import outputs

    model, tokenizer = smollm2
    items = shared_prompt_items(tokenizer)
    assert outputs.accepts_logits_to_keep(model)
    shared = scoring._score_sharing_prompts(model, items, tokenizer.pad_token_id, 4, "fp32", None)
    whole = scoring._score_whole_sequences(model, items, tokenizer.pad_token_id, 4, "fp32", None)
    monkeypatch.setattr(outputs, "accepts_logits_to_keep", lambda _: False)
    every_position = scoring._score_whole_sequences(model, items, tokenizer.pad_token_id, 4, "fp32", None)
    assert_same_scores(shared, whole, atol=1e-4)
    assert_same_scores(whole, every_position, atol=1e-5)


@pytest.mark.parametrize("router, gate_bias", [("content", -40.0), ("content", 0.0), ("none", 0.0),
                                               ("content+below", -40.0), ("content+below", 0.0), ("layer", 0.0),
                                               ("shared", 0.0), ("names", 0.0)])
def test_an_alter_adapter_scores_the_same_after_a_shared_prompt(router, gate_bias, tiny_runs, random_alter_adapter):
    """The routing state carries from the shared prompt into each answer: the content gate's running max, the names
    gate's switches, the 'shared' router's running sum, and the KV cache of the frozen pass ('layer', 'shared',
    `adapt_below_gate`), which gives each answer token its entropy class: same scores, same routes."""
    from alter.evaluation import scoring
    from alter.models import load_model

    model, tokenizer = load_model(str(tiny_runs / "target"))
    items = shared_prompt_items(tokenizer)
    france = tokenizer(" France", add_special_tokens=False)["input_ids"]  # a "name" that half the prompts hold
    assert sum(_holds(item.input_ids[: item.prompt_length], france) for item in items) == 3
    adapter = random_alter_adapter(model, seed=5, router=router.split("+")[0], gate_bias=gate_bias,
                                   adapt_below_gate=router == "content+below",
                                   name_patterns=[france] if router == "names" else None)
    shared = scoring._score_sharing_prompts(model, items, tokenizer.pad_token_id, 2, "fp32", None)
    whole = scoring._score_whole_sequences(model, items, tokenizer.pad_token_id, 2, "fp32", None)
    assert_same_scores(shared, whole, atol=1e-5)
    for a, b in zip(shared, whole):
        np.testing.assert_array_equal(a.route, b.route)
    routed = np.concatenate([s.route for s in whole])
    assert routed.any() and (router == "none" or gate_bias == 0.0 or not routed.all()), routed
    if router == "names":  # on at every answer token after a prompt that names France, nowhere else
        for item, score in zip(items, shared):
            named = _holds(item.input_ids[: item.prompt_length], france)
            assert (score.route != 0).tolist() == [named] * len(score.route)


def _holds(ids: list[int], pattern: list[int]) -> bool:
    return any(ids[i : i + len(pattern)] == pattern for i in range(len(ids) - len(pattern) + 1))
