"""The MUSE suite (Shi et al., 2024; ../shared/docs/benchmarks.md): verbatim memorisation of the forget corpus,
knowledge memorisation of forget and retain facts, and privacy leakage against the retrain model.

- `forget_verbmem_ROUGE`: greedy continuation of each VerbMem prompt (128 new tokens), ROUGE-L F1 against `gt`.
- `forget_knowmem_ROUGE`, `retain_knowmem_ROUGE`: each question after the 10 in-context pairs ("Question: ...\\n
  Answer: ...", blank line between), greedy, at most 32 new tokens, cut at a blank line or "Question:", ROUGE-L F1.
- MIA AUCs of the privleak forget texts (members) against the holdout texts, and `privleak` = (s - s_ref) / s_ref
  * 100 with s = 1 - AUC of Min-K% (k = 0.4) and the retrain model's log as reference.
Prompts are plain text (no chat template), as MUSE evaluates. Texts are scored up to `max_text_tokens` tokens.
Where forget items name the sequential request they belong to (`request`, as in a generated world), the summary also
has `forget_request{k}_verbmem_ROUGE` and `forget_request{k}_knowmem_ROUGE` per request k.
"""

from __future__ import annotations

import numpy as np

from alter.data.formatting import EncodedQA
from alter.data.muse import MuseData
from alter.errors import UserError
from alter.evaluation.runner import DatasetSpec, Generation, Outputs
from alter.evaluation.suites.base import Suite
from alter.evaluation.suites.tofu import attack_scores
from alter.metrics import privacy
from alter.metrics.rouge import rouge_l

VERSION = 1
TABLE_KEYS = ("forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "privleak", "mia_min_k")
VERBMEM_TOKENS, KNOWMEM_TOKENS = 128, 32
KNOWMEM_STOPS = ("\n\n", "Question:")


def icl_prefix(examples: list[dict]) -> str:
    return "".join(f"Question: {row['question']}\nAnswer: {row['answer']}\n\n" for row in examples)


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text)["input_ids"])


def prepare_options(options: dict) -> dict:
    data = MuseData(options["data"])
    for subset, split in (("verbmem", "forget"), ("knowmem", "forget_qa"), ("knowmem", "forget_qa_icl"),
                          ("privleak", "forget"), ("privleak", "holdout")):
        data.load(subset, split)  # a missing subset or a malformed item fails before a model loads
    return {"max_text_tokens": 512, **options}


def datasets(options: dict, tokenizer) -> list[DatasetSpec]:
    data = MuseData(options["data"])
    specs = [DatasetSpec("forget_verbmem", data.load("verbmem", "forget"), _verbmem_item,
                         generation=Generation(lambda tok, row: _ids(tok, row["prompt"]), VERBMEM_TOKENS))]
    for side in ("forget", "retain"):
        split = "forget_qa" if side == "forget" else "retain2_qa"
        if side == "retain" and not data.has("knowmem", split):
            continue
        prefix = icl_prefix(data.load("knowmem", f"{split}_icl"))
        specs.append(DatasetSpec(
            f"{side}_knowmem", data.load("knowmem", split), _knowmem_item,
            generation=Generation(lambda tok, row, prefix=prefix: _ids(tok, f"{prefix}Question: {row['question']}\n"
                                                                             "Answer:"), KNOWMEM_TOKENS, KNOWMEM_STOPS)))
    limit = options["max_text_tokens"]
    for side in ("forget", "holdout"):
        texts = [{"text": text} for text in data.load("privleak", side)]
        specs.append(DatasetSpec(f"privleak_{side}", texts, _privleak_item,
                                 sequences=lambda tok, row: [EncodedQA(_ids(tok, row["text"])[:limit], 1)]))
    return specs


def _verbmem_item(row: dict, outputs: Outputs) -> dict:
    return {"prompt_end": row["prompt"][-80:], "gt": row["gt"], "generation": outputs.generation,
            "rouge_f1": rouge_l(outputs.generation, row["gt"])["f1"], **_request(row)}


def _knowmem_item(row: dict, outputs: Outputs) -> dict:
    return {"question": row["question"], "answer": row["answer"], "generation": outputs.generation,
            "rouge_f1": rouge_l(outputs.generation, row["answer"])["f1"], **_request(row)}


def _request(row: dict) -> dict:
    return {"request": row["request"]} if isinstance(row.get("request"), int) else {}


def per_request(log: dict) -> dict:
    """Mean ROUGE-L F1 of the forget items of each sequential request, where items name one."""
    summary = {}
    for kind in ("verbmem", "knowmem"):
        items = [i for i in log[f"forget_{kind}"]["items"].values() if "request" in i]
        for request in sorted({i["request"] for i in items}):
            summary[f"forget_request{request}_{kind}_ROUGE"] = float(np.mean(
                [i["rouge_f1"] for i in items if i["request"] == request]))
    return summary


def _privleak_item(row: dict, outputs: Outputs) -> dict:
    scores = outputs.scores[0]
    return {"start": row["text"][:60], "nll": scores.nll, "mia": attack_scores(scores, row["text"])}


def _mean(log: dict, key: str, field: str) -> float:
    return float(np.mean([item[field] for item in log[key]["items"].values()]))


def attack_auc(log: dict, attack: str) -> float:
    members = [item["mia"][attack] for item in log["privleak_forget"]["items"].values()]
    others = [item["mia"][attack] for item in log["privleak_holdout"]["items"].values()]
    return privacy.attack_auc(members, others)


def summarize(log: dict, reference: dict | None = None) -> tuple[dict, list[str]]:
    summary: dict = {"forget_verbmem_ROUGE": _mean(log, "forget_verbmem", "rouge_f1"),
                     "forget_knowmem_ROUGE": _mean(log, "forget_knowmem", "rouge_f1"),
                     "retain_knowmem_ROUGE": _mean(log, "retain_knowmem", "rouge_f1") if "retain_knowmem" in log else None}
    notes = [] if "retain_knowmem" in log else ["no knowmem/retain2_qa in the data: retain_knowmem_ROUGE skipped"]
    summary.update(per_request(log))
    for attack in ("loss", "zlib", "min_k", "min_k_plus_plus"):
        summary[f"mia_{attack}"] = attack_auc(log, attack)
    summary["privleak"] = None
    if reference is None:
        notes.append("privleak needs the retrain model's log: pass --retain-logs PATH/MUSE_EVAL.json")
    else:
        summary["privleak"], note = privacy.privleak_or_note(summary["mia_min_k"], attack_auc(reference, "min_k"))
        notes += [note] if note else []
    return summary, notes


def check_reference(options: dict, settings, reference: dict) -> list[str]:
    if "privleak_forget" not in reference:
        raise UserError("--retain-logs: not a MUSE_EVAL.json per-item log (no privleak items)")
    theirs = reference.get("meta", {}).get("precision")
    if theirs not in (None, settings.precision):
        return [f"the reference log was computed in {theirs}, this evaluation in {settings.precision}"]
    return []


SUITE = Suite("muse", "MUSE_EVAL.json", "MUSE_SUMMARY.json", VERSION, prepare_options, datasets, summarize,
              check_reference, TABLE_KEYS)
