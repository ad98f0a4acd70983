"""The whole bench's (or demo's) progress: after each step, how many are done, the time so far and an estimate of
the time left. A step kind's duration is estimated from this run's steps of that kind, else from the last runs on
this machine (`$ALTER_CACHE/timings.json`, keyed by model, precision and CPU), else from a rough default."""

from __future__ import annotations

import json
import time
from collections import Counter

from alter.io import cache_root, write_json
from alter.models.precision import machine_facts

DEFAULT_SECONDS = {"tiny": {"finetune_step": 40, "eval_step": 15, "unlearn_step": 8},
                   "other": {"finetune_step": 330, "eval_step": 150, "unlearn_step": 150}}


class Progress:
    def __init__(self, model: str, precision: str, steps: Counter):
        self.left = Counter(steps)
        self.total = sum(steps.values())
        self.started = time.perf_counter()
        self.seconds: dict[str, list[float]] = {}
        facts = machine_facts("cpu", precision)
        self.key = f"{model}|{precision}|{facts.get('isa', '')}|{facts.get('threads', '')}"
        self.defaults = DEFAULT_SECONDS["tiny" if model == "tiny" else "other"]
        self.history = _read(cache_root() / "timings.json").get(self.key, {})

    def skipped(self, kind: str) -> None:
        self.left[kind] -= 1

    def finished(self, kind: str, seconds: float) -> None:
        self.left[kind] -= 1
        self.seconds.setdefault(kind, []).append(seconds)
        self._remember(kind, seconds)
        done = self.total - sum(self.left.values())
        print(f"progress: {done}/{self.total} steps, {_minutes(time.perf_counter() - self.started)} so far, about "
              f"{_minutes(self.eta())} left", flush=True)

    def estimate(self, kind: str) -> float:
        if self.seconds.get(kind):
            return sum(self.seconds[kind]) / len(self.seconds[kind])
        return self.history.get(kind, self.defaults.get(kind, 60))

    def eta(self) -> float:
        return sum(count * self.estimate(kind) for kind, count in self.left.items() if count > 0)

    def _remember(self, kind: str, seconds: float) -> None:
        path = cache_root() / "timings.json"
        timings = _read(path)
        timings.setdefault(self.key, {})[kind] = round(seconds, 1)
        try:
            write_json(path, timings)
        except OSError:
            pass  # timings only improve estimates


def _read(path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
