"""The run manifest (`manifest.json`): what a finished run was, what it cost, on which machine. Written last, so its
presence means the run is complete; fine-tuning and unlearning share every field but their own."""

from __future__ import annotations

import time

from alter.models.precision import machine_facts
from alter.resources import library_versions


def run_manifest(kind: str, *, started: float, precision: str, accelerator, seed: int, parameters: dict, result,
                 **fields) -> dict:
    return {
        "kind": kind,
        "status": "complete",
        **fields,
        "seed": seed,
        "precision": precision,
        "machine": machine_facts(accelerator.device, precision),
        "processes": accelerator.num_processes,
        "parameters": parameters,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "versions": library_versions(),
        **result.summary(),
    }
