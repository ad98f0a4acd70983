"""Context augmentation: training contexts never meet the evaluation's probes, and batches go over rows once per
epoch, each in one of its contexts."""

from dataclasses import replace

import pytest
import torch

from alter.data.batching import UnlearnBatches
from alter.data.contexts import all_sentences, encode_variants, row_contexts
from alter.data.formatting import DEFAULT_CONTEXT, Context, EncodedQA, encode_qa
from alter.data.sources import from_tofu
from alter.evaluation import probes
from alter.methods import get_method
from alter.training import unlearn as unlearn_module
from alter.training.recipe import build_recipe


def test_no_training_context_sentence_is_a_probe_sentence():
    probe_text = " ".join([probes.INSTRUCTION, probes.SYSTEM_PROMPT, *probes.UNRELATED_TURN,
                           *probes.FOLLOW_UP_OPENING]).lower()
    for sentence in all_sentences():
        assert sentence.strip().lower() not in probe_text
        words = {w.strip(".,?:!").lower() for w in sentence.split()}
        probe_words = {w.strip(".,?:!").lower() for w in probe_text.split()}
        assert len(words & probe_words - {"a", "the", "you", "of", "and", "to", "in", "is", "for", "about",
                                          "questions", "answer", "question", "are"}) <= 3, sentence


def test_each_row_keeps_its_own_format_first_and_seeded_others(tiny_pair):
    contexts = row_contexts(5, 3, seed=0)
    assert contexts[0] == DEFAULT_CONTEXT and len(contexts) == 3 and row_contexts(5, 3, 0) == contexts
    _, tokenizer = tiny_pair
    rows = [{"question": "Where was Amara born?", "answer": "In Lisbon."}, {"question": "Who?", "answer": "Her."}]
    items = encode_variants(tokenizer, rows, 3, seed=0)
    assert len(items) == 6
    for row, start in zip(rows, (0, 3)):  # row-major; every variant ends with the same labelled answer
        answers = {tuple(item.answer_ids) for item in items[start : start + 3]}
        assert len(answers) == 1


def test_an_epoch_visits_every_row_once_in_one_of_its_contexts():
    rows, variants = 10, 3
    items = [EncodedQA([1, 2, 3 + v], 1) for r in range(rows) for v in range(variants)]
    source = UnlearnBatches(items, items, None, batch_size=4, seed=0, pad_id=0, variants=variants)
    seen_rows, chosen_variants = [], set()
    for index in range(source.batches_per_epoch()):
        batch_rows, chosen = source.forget_indices(0, index)
        assert [c // variants for c in chosen] == batch_rows
        seen_rows += batch_rows
        chosen_variants |= {c % variants for c in chosen}
    assert sorted(set(seen_rows)) == list(range(rows)) and chosen_variants == {0, 1, 2}
    assert torch.equal(source.batch(0, 0)["forget_index"], torch.tensor(source.forget_indices(0, 0)[1]))


def test_without_the_plain_format_no_row_is_trained_without_the_chat_template():
    rows = range(200)
    with_plain = [context for row in rows for context in row_contexts(row, 3, seed=0)]
    without = [context for row in rows for context in row_contexts(row, 3, seed=0, plain_format=False)]
    assert sum(not context.template for context in with_plain) > 40  # about one in five sampled contexts
    assert all(context.template for context in without)
    kinds = {(context.system is not None, bool(context.prefix), bool(context.history)) for context in without}
    assert kinds == {(False, False, False), (True, False, False), (False, True, False), (False, False, True),
                     (True, True, False)}  # its own format and the four other kinds are all still drawn


def prepared_setup(model: str, data, out, monkeypatch):
    """The `Setup` that `alter unlearn --method alter` hands the method (the run stops there). fp32: an earlier test's
    accelerator state fixes the process's precision, and the flags do not depend on it."""
    class Prepared(Exception):
        pass

    def capture(setup):
        captured.append(setup)
        raise Prepared

    captured = []
    monkeypatch.setattr(unlearn_module, "get_method", lambda name: replace(get_method(name), prepare=capture))
    with pytest.raises(Prepared):
        recipe = build_recipe("alter", None, ["train.context_variants=3", "train.precision=fp32"])
        unlearn_module.unlearn(model, data, recipe, str(out))
    return captured[0]


def test_unlearn_flags_exactly_the_items_it_encoded_without_the_chat_template(small_world, tmp_path, monkeypatch):
    """The method's setup says which items are in the plain format (`params.plain_nll` reads it): compared with
    each row's own encoding in the plain format, under SmolLM2's tokenizer, which has a chat template."""
    data = from_tofu(str(small_world), "forget10", "retain90")
    setup = prepared_setup("smollm2", data, tmp_path / "u", monkeypatch)
    for kind, rows in (("forget", data.forget), ("retain", data.retain)):
        items, flags = getattr(setup, kind), setup.plain[kind]
        assert len(flags) == len(items) == 3 * len(rows) and 0 < sum(flags) < len(rows)
        for index, (item, flag) in enumerate(zip(items, flags)):
            row = rows[index // 3]
            plain = encode_qa(setup.tokenizer, row["question"], row["answer"], Context(template=False))
            assert (item.input_ids == plain.input_ids) == flag


def test_without_a_chat_template_no_item_is_flagged_plain(tiny_runs, small_world, tmp_path, monkeypatch):
    """The tiny tokenizer has no chat template: the plain format is every row's own, so nothing is flagged."""
    data = from_tofu(str(small_world), "forget10", "retain90")
    assert prepared_setup(str(tiny_runs / "target"), data, tmp_path / "u", monkeypatch).plain == {}
