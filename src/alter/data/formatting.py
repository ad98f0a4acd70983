"""Prompt formatting and answer-only labels.

With a chat template (benchmarks.md convention, as in OpenUnlearning): `full = template([user q, assistant a])`,
`prompt = template([user q], add_generation_prompt=True)`, labels are `full[len(prompt):]` plus EOS when `full`
does not already end with it. We check that the prompt really is a prefix of `full` instead of assuming it.
Without a chat template: `Question: {q}\nAnswer: ` and the answer are tokenised separately and concatenated,
so the boundary is exact by construction for every tokenizer, then EOS.

A `Context` says what surrounds the question: a system prompt, earlier turns, a sentence before the question, or
the plain format on a chat model. Training uses the default context; the evaluation's out-of-sample probes use
the others (docs/metrics.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from alter.errors import UserError

IGNORE_INDEX = -100
PLAIN_PROMPT = "Question: {question}\nAnswer: "


@dataclass(frozen=True)
class Context:
    system: str | None = None
    history: tuple[tuple[str, str], ...] = ()  # earlier (question, answer) turns
    prefix: str = ""  # text before the question, inside the same user turn
    template: bool = True  # use the tokenizer's chat template when it has one


DEFAULT_CONTEXT = Context()


@dataclass(frozen=True)
class EncodedQA:
    input_ids: list[int]
    prompt_length: int

    @property
    def labels(self) -> list[int]:
        return [IGNORE_INDEX] * self.prompt_length + self.input_ids[self.prompt_length :]

    @property
    def answer_ids(self) -> list[int]:
        return self.input_ids[self.prompt_length :]


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def uses_template(tokenizer, context: Context) -> bool:
    return context.template and has_chat_template(tokenizer)


def user_turn_marker(tokenizer) -> list[int]:
    """The tokens that open a user turn in the chat template (SmolLM2: '<|im_start|>user'): what the template adds
    for a second user message after an exchange, up to the message, without trailing whitespace (which the message
    itself may merge with). Empty when there is no chat template or the template does not render that way."""
    if not has_chat_template(tokenizer):
        return []
    exchange = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]
    before = tokenizer.apply_chat_template(exchange, tokenize=False)
    after = tokenizer.apply_chat_template(exchange + [{"role": "user", "content": "Q2"}], tokenize=False)
    if not after.startswith(before) or "Q2" not in after[len(before):]:
        return []
    header = after[len(before):].split("Q2")[0].rstrip()
    return list(tokenizer(header, add_special_tokens=False)["input_ids"]) if header else []


def _chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def plain_text(question: str, context: Context) -> str:
    system = f"{context.system}\n\n" if context.system else ""
    history = "".join(PLAIN_PROMPT.format(question=q) + f"{a}\n\n" for q, a in context.history)
    return system + history + PLAIN_PROMPT.format(question=context.prefix + question)


def encode_prompt(tokenizer, question: str, context: Context = DEFAULT_CONTEXT) -> list[int]:
    """Token ids of the prompt a model answers from (generation starts right after them)."""
    if uses_template(tokenizer, context):
        return _chat_ids(tokenizer, _messages(question, None, context), add_generation_prompt=True)
    return list(tokenizer(plain_text(question, context))["input_ids"])


def encode_qa(tokenizer, question: str, answer: str, context: Context = DEFAULT_CONTEXT) -> EncodedQA:
    prompt = encode_prompt(tokenizer, question, context)
    if uses_template(tokenizer, context):
        full = _chat_ids(tokenizer, _messages(question, answer, context), add_generation_prompt=False)
        if full[: len(prompt)] != prompt:
            raise UserError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r}: chat template prompt is not a prefix of "
                "prompt+answer; the answer boundary would be wrong"
            )
    else:
        full = prompt + list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and full[-1] != eos:
        full.append(eos)
    return EncodedQA(full, len(prompt))


def encode_text(tokenizer, text: str) -> EncodedQA:
    """Raw text, every token labelled but the first (nothing predicts it): corpora such as MUSE's news articles."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    eos = tokenizer.eos_token_id
    return EncodedQA(ids + ([eos] if eos is not None else []), 1)


def _messages(question: str, answer: str | None, context: Context) -> list[dict]:
    messages = [{"role": "system", "content": context.system}] if context.system else []
    for earlier_question, earlier_answer in context.history:
        messages += [{"role": "user", "content": earlier_question}, {"role": "assistant", "content": earlier_answer}]
    messages.append({"role": "user", "content": context.prefix + question})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def encode_rows(tokenizer, rows: list[dict], max_text_tokens: int = 512) -> list[EncodedQA]:
    """Question/answer rows as prompt + labelled answer; text rows as fully labelled windows of at most
    `max_text_tokens` tokens (a long document becomes several items)."""
    items = []
    for row in rows:
        if "text" in row:
            whole = encode_text(tokenizer, row["text"]).input_ids
            items += [EncodedQA(whole[i : i + max_text_tokens], 1) for i in range(0, len(whole), max_text_tokens)
                      if len(whole[i : i + max_text_tokens]) > 1]
        else:
            items.append(encode_qa(tokenizer, row["question"], row["answer"]))
    return items
