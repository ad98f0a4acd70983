"""Real WMDP and MMLU through lm-evaluation-harness (the optional extra `alter[lmeval]`), for machines that reach
the hub and, for the full sets, have a GPU. Any model `alter` loads, with a peft LoRA (folded exactly) or an ALTER
adapter on top, is handed to lm-eval's `HFLM` as a model object, so lm-eval's own prompts, tokenisation and
scoring decide. `alter eval wmdp` formats and scores the same way (`tests/test_muse_wmdp.py` compares the two on a
tiny model).
"""

from __future__ import annotations

from pathlib import Path

import torch

from alter.adapters.loading import load_model_with_adapter
from alter.errors import UserError
from alter.io import write_json

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
RESULT_FILE = "HARNESS.json"


def harness_model(model_spec: str, adapter: str | None, dtype: str = "fp32", batch_size: int = 8,
                  trust_remote_code: bool = False):
    """lm-eval's `HFLM` around the model (and adapter) as `alter` loads it."""
    try:
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise UserError("lm-evaluation-harness is not installed: pip install 'alter[lmeval]'") from None
    model, tokenizer = load_model_with_adapter(model_spec, adapter, trust_remote_code=trust_remote_code)
    if hasattr(model, "merge_and_unload"):  # a peft LoRA: folded into the weights, exactly
        model = model.merge_and_unload()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device=device, dtype=DTYPES[dtype]).eval()
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)


def run_harness(model_spec: str, adapter: str | None, tasks: list[str], out: Path, limit: int | None = None,
                include_path: str | None = None, dtype: str = "fp32", batch_size: int = 8,
                trust_remote_code: bool = False) -> dict:
    """Zero-shot lm-eval tasks; writes HARNESS.json (lm-eval's results and each item's prediction)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    lm = harness_model(model_spec, adapter, dtype, batch_size, trust_remote_code)
    manager = TaskManager(include_path=include_path)
    unknown = [task for task in tasks if task not in manager.all_tasks]
    if unknown:
        raise UserError(f"--tasks: lm-eval has no task {unknown[0]!r} (e.g. wmdp, wmdp_bio, mmlu)")
    results = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=0, limit=limit, task_manager=manager,
                                      log_samples=True)
    record = {"model": model_spec, "adapter": adapter, "tasks": tasks, "dtype": dtype, "limit": limit,
              "lm_eval_version": lm_eval.__version__, "results": results["results"],
              "items": {task: [_item(sample) for sample in samples] for task, samples in results["samples"].items()}}
    write_json(out / RESULT_FILE, record)
    return record


def _item(sample: dict) -> dict:
    logliks = [float(response[0]) for response in sample["filtered_resps"]]
    return {"doc_id": sample["doc_id"], "target": sample["target"], "logliks": logliks, "acc": sample.get("acc")}
