import pytest

from alter.data.batching import WIDTH_MULTIPLE, collate, width_multiple
from alter.data.formatting import IGNORE_INDEX, encode_prompt, encode_qa

QUESTIONS = [("Where was Amara Szabo born?", "Amara Szabo was born in Lisbon, Portugal."),
             ("What is 2+2?", "4"),
             ("Who wrote 'Hamlet'?", " William Shakespeare, in about 1600.\n")]


def _labelled(encoded):
    return [t for t in encoded.labels if t != IGNORE_INDEX]


@pytest.mark.parametrize("question,answer", QUESTIONS)
def test_plain_template_labels_are_exactly_answer_plus_eos(tiny_pair, question, answer):
    _, tokenizer = tiny_pair
    encoded = encode_qa(tokenizer, question, answer)
    labelled = _labelled(encoded)
    assert labelled[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(labelled[:-1]) == answer
    assert encoded.input_ids[: encoded.prompt_length] == encode_prompt(tokenizer, question)
    assert tokenizer.decode(encoded.input_ids[: encoded.prompt_length]) == f"Question: {question}\nAnswer: "


@pytest.mark.slow
@pytest.mark.parametrize("question,answer", QUESTIONS)
def test_chat_template_labels_are_the_assistant_turn_plus_eos(smollm2, question, answer):
    _, tokenizer = smollm2
    encoded = encode_qa(tokenizer, question, answer)
    # benchmarks.md: labels = full[len(prompt):] (answer + the template's end of turn) + EOS appended
    assert tokenizer.decode(_labelled(encoded)) == answer + "<|im_end|>\n<|im_end|>"
    prompt_text = tokenizer.decode(encoded.input_ids[: encoded.prompt_length])
    assert prompt_text.endswith(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
    # the pad id (<|im_end|>) occurs inside the prompt: the mask must still keep every real token
    batch = collate([encoded, encode_qa(tokenizer, "Hi?", "Hello.")], tokenizer.pad_token_id)
    assert batch["attention_mask"][0].sum() == len(encoded.input_ids)
    assert tokenizer.pad_token_id in encoded.input_ids[: encoded.prompt_length]


def test_collate_pads_by_length_on_either_side(tiny_pair):
    _, tokenizer = tiny_pair
    short, long = encode_qa(tokenizer, "Q?", "A."), encode_qa(tokenizer, "A longer question?", "A longer answer.")
    right = collate([short, long], tokenizer.pad_token_id, side="right")
    left = collate([short, long], tokenizer.pad_token_id, side="left")
    n = len(short.input_ids)
    assert right["attention_mask"][0].tolist() == [1] * n + [0] * (len(long.input_ids) - n)
    assert left["attention_mask"][0].tolist() == [0] * (len(long.input_ids) - n) + [1] * n
    assert right["input_ids"][0, :n].tolist() == short.input_ids == left["input_ids"][0, -n:].tolist()
    assert (right["labels"][0, n:] == IGNORE_INDEX).all()


def test_collate_rounds_the_width_up_to_a_multiple_and_masks_the_extra_columns(tiny_pair):
    _, tokenizer = tiny_pair
    short, long = encode_qa(tokenizer, "Q?", "A."), encode_qa(tokenizer, "A longer question?", "A longer answer.")
    width = len(long.input_ids)
    for multiple, expected in ((1, width), (16, -(-width // 16) * 16), (width, width), (width + 1, width + 1)):
        batch = collate([short, long], tokenizer.pad_token_id, multiple=multiple)
        assert batch["input_ids"].shape == (2, expected)
        assert batch["attention_mask"].sum(1).tolist() == [len(short.input_ids), width]
        assert (batch["labels"][:, width:] == IGNORE_INDEX).all()
        assert (batch["input_ids"][1, width:] == tokenizer.pad_token_id).all()
        assert batch["labels"][1, :width].tolist() == long.labels


def test_frozen_passes_are_padded_to_the_width_multiple_only_where_oneDNN_builds_kernels_per_shape(tiny_pair):
    from alter.methods.alter.statistics import frozen_batches

    model, tokenizer = tiny_pair
    items = [encode_qa(tokenizer, question, answer) for question, answer in QUESTIONS]
    longest = max(len(item.input_ids) for item in items)
    assert longest % WIDTH_MULTIPLE
    widths = {precision: [batch["input_ids"].shape[1] for _, batch, _ in
                          frozen_batches(model, items, tokenizer.pad_token_id, precision, hidden=False)]
              for precision in ("fp32", "bf16")}
    assert widths == {"fp32": [longest], "bf16": [-(-longest // WIDTH_MULTIPLE) * WIDTH_MULTIPLE]}
    assert width_multiple("fp16") == WIDTH_MULTIPLE
