"""Prompt formatting and answer-only labels.

With a chat template (benchmarks.md convention, as in OpenUnlearning): `full = template([user q, assistant a])`,
`prompt = template([user q], add_generation_prompt=True)`, labels are `full[len(prompt):]` plus EOS when `full`
does not already end with it. We check that the prompt really is a prefix of `full` instead of assuming it.
Without a chat template: `Question: {q}\nAnswer: ` and the answer are tokenised separately and concatenated,
so the boundary is exact by construction for every tokenizer, then EOS.
"""

from __future__ import annotations

from dataclasses import dataclass

from alter.errors import UserError

IGNORE_INDEX = -100
PLAIN_PROMPT = "Question: {question}\nAnswer: "


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


def _chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def encode_prompt(tokenizer, question: str, system_prompt: str | None = None) -> list[int]:
    """Token ids of the prompt a model answers from (generation starts right after them)."""
    if has_chat_template(tokenizer):
        return _chat_ids(tokenizer, _messages(question, None, system_prompt), add_generation_prompt=True)
    text = PLAIN_PROMPT.format(question=question)
    return list(tokenizer(text)["input_ids"])


def encode_qa(tokenizer, question: str, answer: str, system_prompt: str | None = None) -> EncodedQA:
    prompt = encode_prompt(tokenizer, question, system_prompt)
    if has_chat_template(tokenizer):
        full = _chat_ids(tokenizer, _messages(question, answer, system_prompt), add_generation_prompt=False)
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


def _messages(question: str, answer: str | None, system_prompt: str | None) -> list[dict]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": question})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages
