"""Out-of-sample probes: the forget and retain questions asked in ways no training or fitting ever saw.

Each family changes one thing about how a question reaches the model (docs/metrics.md, "Out-of-sample probes"):
- `paraphrased_question`: the data's own rewording (TOFU's field);
- `heldout_wording`: a wording that only evaluation reads (`probe_question`, written by `alter world tofu`);
- `instruction`: an instruction sentence before the question, in the same user turn;
- `system_prompt`: a different system prompt;
- `conversation`: after an unrelated exchange;
- `few_shot`: after three question/answer turns about retain authors;
- `follow_up`: the subject named only in an opening exchange, the question referring to them as "this author";
- `plain`: the plain `Question: ... Answer:` format instead of the chat template.
The sentences below appear nowhere else in alter: not in training data, recipes or gate fitting. The plain format
itself is not out of sample for a run with `train.context_variants` > 1 (ALTER's default): it is one of the
training contexts (`data/contexts.py`) unless `train.context_plain_format` is false.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from alter.data.formatting import DEFAULT_CONTEXT, Context, has_chat_template
from alter.data.splits import FEW_SHOT_TURNS
from alter.data.subjects import subject_name

FAMILIES = ("paraphrased_question", "heldout_wording", "instruction", "system_prompt", "conversation", "few_shot",
            "follow_up", "plain")
INSTRUCTION = "Please answer the following question about a writer in one or two sentences. "
SYSTEM_PROMPT = "You are a knowledgeable librarian. Answer questions about books and their authors accurately."
UNRELATED_TURN = ("Could you suggest a name for a grey kitten?",
                  "How about Pebble? It is short, friendly and suits a grey coat.")
FOLLOW_UP_OPENING = ("I would like to ask you something about the writer {name}.",
                     "Certainly. What would you like to know about {name}?")
FOLLOW_UP_REFERENCE = "this author"
QUESTION_FIELDS = {"paraphrased_question": "paraphrased_question", "heldout_wording": "probe_question"}


@dataclass
class Probe:
    family: str
    rows: list[dict] | None  # the rows with their probe question; None when the family cannot be built
    context: Context = DEFAULT_CONTEXT  # what surrounds every row's question, unless the row has its own `context`
    note: str | None = None


def parse_families(text: str) -> tuple[str, ...]:
    if text in ("all", ""):
        return FAMILIES
    if text == "none":
        return ()
    families = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [family for family in families if family not in FAMILIES]
    if unknown:
        from alter.errors import UserError

        raise UserError(f"--probes: unknown family {unknown[0]!r} (families: {', '.join(FAMILIES)}, or all, none)")
    return families


def build_probe(family: str, rows: list[dict], few_shot: list[dict], tokenizer, per_subject: int) -> Probe:
    """The probe rows and context of one family; `few_shot` rows (retain authors outside every evaluation set)
    supply the few-shot turns; `rows` are contiguous blocks of `per_subject` rows about one subject each."""
    if family in QUESTION_FIELDS:
        field = QUESTION_FIELDS[family]
        if not all(isinstance(row.get(field), str) and row[field].strip() for row in rows):
            return Probe(family, None, note=f"probe {family}: the data has no {field!r} field on every item")
        return Probe(family, [{**row, "question": row[field]} for row in rows])
    if family == "instruction":
        return Probe(family, rows, Context(prefix=INSTRUCTION))
    if family == "system_prompt":
        return Probe(family, rows, Context(system=SYSTEM_PROMPT))
    if family == "conversation":
        return Probe(family, rows, Context(history=(UNRELATED_TURN,)))
    if family == "few_shot":
        turns = tuple((row["question"], row["answer"]) for row in few_shot[:FEW_SHOT_TURNS])
        if len(turns) < FEW_SHOT_TURNS:
            return Probe(family, None, note="probe few_shot: fewer than 3 retain rows outside the evaluation sets")
        return Probe(family, rows, Context(history=turns))
    if family == "follow_up":
        return _follow_up(rows, per_subject)
    if family == "plain":
        if not has_chat_template(tokenizer):
            return Probe(family, None, note="probe plain: the model has no chat template, so the plain format is "
                                            "the original one")
        return Probe(family, rows, replace(DEFAULT_CONTEXT, template=False))
    raise ValueError(family)


def _follow_up(rows: list[dict], per_subject: int) -> Probe:
    """Per row whose question names its subject (`data/subjects.py`), an opening exchange that names them and then the
    question with the name, and a "the writer"-like title before it, replaced by "this author". Rows whose question
    does not name the subject are left out: the opening exchange would hand them their answer."""
    probe_rows = []
    for start in range(0, len(rows), per_subject):
        block = rows[start : start + per_subject]
        name = subject_name([row["question"] for row in block])
        if name is None:
            continue
        mention = re.compile(rf"(?:\b[Tt]he (?:writer|author|novelist) )?{re.escape(name)}")
        opening = tuple(text.format(name=name) for text in FOLLOW_UP_OPENING)
        for row in block:
            if name in row["question"]:
                question = mention.sub(FOLLOW_UP_REFERENCE, row["question"])
                probe_rows.append({**row, "question": question[:1].upper() + question[1:],
                                   "context": Context(history=(opening,))})
    if not probe_rows:
        return Probe("follow_up", None, note="probe follow_up: no question names a subject found in its rows")
    return Probe("follow_up", probe_rows)
