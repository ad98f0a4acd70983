"""`AlterConfig`: everything that defines an ALTER adapter, saved with it and validated on creation.

Each field's `help` is what `docs/method.md` says about it. The defaults are this project's measured choices; the
paper's reading of each gap is `configs/unlearn/alter-paper.yaml`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from alter.entropy import EntropySettings

ROUTERS = ("content", "names", "layer", "shared", "none")
HEAD_MIXES = ("sum", "mean", "strongest")


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class AlterConfig:
    rank: int = _help("rank r of the shared down-projection A and of every head", default=8)
    alpha: float = _help("scale of the adapter's update: alpha / r", default=16.0)
    forget_heads: int = _help("number of forget heads N, one per forget sub-domain", default=1)
    router: str = _help(
        "what decides that forget heads act: 'content' (a detector on the hidden state at `gate_layer`, max-pooled "
        "over the context so far), 'names' (every forget head on from the token that completes a forget subject's "
        "name, `name_patterns`), 'layer' (a learned gate per adapted layer on its input, the paper's reading), "
        "'shared' (one gate on the running mean of the frozen last hidden state), 'none' (forget heads always on)",
        default="content")
    null_output: bool = _help("'layer'/'shared' routers get an output 'no forget head' (not in the paper); without "
                              "it every token goes to some forget head", default=True)
    gate_layer: int = _help("'content': the decoder layer whose input the gate reads; only layers from there on are "
                            "adapted (unless `adapt_below_gate`), so the gate sees the frozen model's state; -1 = half "
                            "the depth. 'names' adapts the same layers, so the two routers differ only in what decides",
                            default=-1)
    name_patterns: list[list[int]] = _help("'names': the token ids of each forget subject's name, as the tokenizer "
                                           "writes it after a space and at a text's start", default_factory=list)
    name_partial: list[int] = _help("'names': per pattern, from how many of its first tokens a partly written name "
                                    "switches its heads on at the position it reaches, until the text leaves the name "
                                    "(0: only the whole name); empty = 0 for every pattern", default_factory=list)
    name_requests: list[int] = _help("'names': the forget request each name pattern belongs to, in pattern order; a "
                                     "name switches on its own request's heads only; empty = every pattern belongs "
                                     "to request 1", default_factory=list)
    adapt_below_gate: bool = _help("'content': adapt the layers before `gate_layer` too; the gate then reads a "
                                   "frozen pass over those layers, run before every forward (with its own KV cache in "
                                   "generation)", default=False)
    gate_parts: int = _help("'content': detectors per forget head; the head is on where every one of them has fired "
                            "so far (the least of their running maxima is above 0)", default=1)
    head_mix: str = _help("'content': how the forget heads its gate switches on combine at a token: 'sum' (each at "
                          "weight 1, so how far a token is pushed grows with how many fire), 'mean' (each at 1/k of "
                          "the k on), 'strongest' (only the head with the highest score)", default="sum")
    turn_marker: list[int] = _help("'content': the token ids that open a user turn (from the chat template); the "
                                   "gate's running max restarts at each, so an earlier exchange does not keep forget "
                                   "heads on for a later one; empty = it never restarts", default_factory=list)
    top_k_high: int = _help("inference with 'layer'/'shared': high-entropy tokens mix the top-k router outputs",
                            default=3)
    temperature_high: float = _help("router softmax temperature for high-entropy tokens", default=0.8)
    temperature_low: float = _help("router softmax temperature for low-entropy tokens (near-hard choice)",
                                   default=0.01)
    target_modules: list[str] = _help("linear layers to adapt; empty = the model family's projections",
                                      default_factory=list)
    entropy: EntropySettings = _help("token entropy and the high/low threshold", default_factory=EntropySettings)
    head_requests: list[int] = _help("the forget request (1, 2, ...) each forget head was trained for, in head order; "
                                     "empty = every head belongs to request 1 (docs/method.md, \"Sequential "
                                     "requests\")", default_factory=list)

    def __post_init__(self):
        if isinstance(self.entropy, dict):
            self.entropy = EntropySettings(**self.entropy)
        if self.router not in ROUTERS:
            raise ValueError(f"router: expected one of {', '.join(ROUTERS)}, got {self.router!r}")
        if self.head_mix not in HEAD_MIXES:
            raise ValueError(f"head_mix: expected one of {', '.join(HEAD_MIXES)}, got {self.head_mix!r}")
        if self.head_mix != "sum" and self.router != "content":
            raise ValueError(f"head_mix: {self.head_mix!r} needs the 'content' router, got {self.router!r}")
        if self.adapt_below_gate and self.router != "content":
            raise ValueError(f"adapt_below_gate: needs the 'content' router, got {self.router!r}")
        if self.gate_parts < 1 or (self.gate_parts > 1 and self.router != "content"):
            raise ValueError(f"gate_parts: expected 1, or more with the 'content' router, got {self.gate_parts} with "
                             f"{self.router!r}")
        if (self.router == "names") != bool(self.name_patterns):
            raise ValueError(f"name_patterns: the 'names' router needs them and no other router reads them (router "
                             f"{self.router!r}, {len(self.name_patterns)} patterns)")
        if self.turn_marker and self.router != "content":
            raise ValueError(f"turn_marker: needs the 'content' router, got {self.router!r}")
        if self.rank < 1 or self.forget_heads < 1:
            raise ValueError(f"rank and forget_heads must be at least 1, got {self.rank} and {self.forget_heads}")
        if self.router in ("layer", "shared") and not 1 <= self.top_k_high <= self.router_outputs:
            raise ValueError(f"top_k_high: must lie in 1..{self.router_outputs} (the router's outputs), "
                             f"got {self.top_k_high}")
        if self.temperature_high <= 0 or self.temperature_low <= 0:
            raise ValueError("router temperatures must be positive")
        if self.head_requests and len(self.head_requests) != self.forget_heads:
            raise ValueError(f"head_requests: one request per forget head ({self.forget_heads}), "
                             f"got {len(self.head_requests)}")
        if self.name_partial and len(self.name_partial) != len(self.name_patterns):
            raise ValueError(f"name_partial: one length per name pattern ({len(self.name_patterns)}), "
                             f"got {len(self.name_partial)}")
        if any(not 0 <= k < len(p) for k, p in zip(self.name_partial, self.name_patterns)):
            raise ValueError("name_partial: each length must lie in 0..len(pattern) - 1")
        if self.name_requests and len(self.name_requests) != len(self.name_patterns):
            raise ValueError(f"name_requests: one request per name pattern ({len(self.name_patterns)}), "
                             f"got {len(self.name_requests)}")
        if self.router == "names" and set(self.pattern_requests) != set(self.requests):
            raise ValueError(f"name_requests: every request needs both names and heads (names for requests "
                             f"{sorted(set(self.pattern_requests))}, heads for {sorted(set(self.requests))})")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def router_outputs(self) -> int:
        """Outputs of a 'layer' or 'shared' router: the forget heads, plus 'no forget head' when `null_output`."""
        return self.forget_heads + int(self.null_output)

    @property
    def requests(self) -> list[int]:
        """The request of each forget head."""
        return list(self.head_requests) or [1] * self.forget_heads

    @property
    def pattern_partial(self) -> list[int]:
        """Per name pattern, the shortest partly written prefix that switches its heads on (0: none)."""
        return list(self.name_partial) or [0] * len(self.name_patterns)

    @property
    def pattern_requests(self) -> list[int]:
        """The request of each name pattern."""
        return list(self.name_requests) or [1] * len(self.name_patterns)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "AlterConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown adapter setting {sorted(unknown)[0]!r}")
        return cls(**values)
