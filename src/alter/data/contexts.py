"""Context augmentation for training (`train.context_variants`): each question/answer row is also trained on in
other contexts (a system prompt, a sentence before the question, an earlier unrelated exchange, the plain format),
so that what is learned or unlearned does not hold only in the one format training used.

None of these sentences appears in the evaluation's out-of-sample probes (`evaluation/probes.py`): a test checks it,
so the probes stay out of sample for augmented runs too.
"""

from __future__ import annotations

import random

from alter.data.formatting import DEFAULT_CONTEXT, Context

SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "You answer questions briefly and precisely.",
    "You are an assistant for a public library's help desk.",
    "Keep your replies short and factual.",
    "You are a research assistant who checks facts carefully.",
)
PREFIXES = (
    "Quick question: ",
    "I was wondering about this. ",
    "Answer in one sentence. ",
    "For a quiz I am preparing: ",
    "Can you help me with something? ",
)
TURNS = (
    ("What is a good way to start learning to cook?", "Begin with simple dishes like soups and omelettes."),
    ("How many days are there in a leap year?", "A leap year has 366 days."),
    ("Can you recommend a hobby for rainy days?", "Jigsaw puzzles are a relaxing choice."),
)


def sampled_context(rng: random.Random, plain_format: bool = True) -> Context:
    """One training context: a system prompt, a prefix, an earlier turn or (if `plain_format`) the plain format,
    sometimes a system prompt and a prefix at once."""
    kind = rng.randrange(5) if plain_format else rng.choice((0, 1, 2, 4))
    if kind == 0:
        return Context(system=rng.choice(SYSTEM_PROMPTS))
    if kind == 1:
        return Context(prefix=rng.choice(PREFIXES))
    if kind == 2:
        return Context(history=(rng.choice(TURNS),))
    if kind == 3:
        return Context(template=False)
    return Context(system=rng.choice(SYSTEM_PROMPTS), prefix=rng.choice(PREFIXES))


def row_contexts(row: int, variants: int, seed: int, plain_format: bool = True) -> list[Context]:
    """The training contexts of one row: its own format first, then `variants - 1` sampled ones (seeded per row)."""
    rng = random.Random(seed * 1_000_003 + row)
    return [DEFAULT_CONTEXT] + [sampled_context(rng, plain_format) for _ in range(variants - 1)]


def plain_items(rows: int, variants: int, seed: int, plain_format: bool = True) -> list[bool]:
    """Per item of `encode_variants` (same order and draws): whether it is in the sampled plain format."""
    return [not context.template for index in range(rows)
            for context in row_contexts(index, variants, seed, plain_format)]


def all_sentences() -> list[str]:
    return [*SYSTEM_PROMPTS, *PREFIXES, *(text for turn in TURNS for text in turn)]


def encode_variants(tokenizer, rows: list[dict], variants: int, seed: int, plain_format: bool = True) -> list:
    """Question/answer rows in `variants` contexts each, row-major: row r's encodings sit at r * variants + v."""
    from alter.data.formatting import encode_qa

    return [encode_qa(tokenizer, row["question"], row["answer"], context)
            for index, row in enumerate(rows) for context in row_contexts(index, variants, seed, plain_format)]
