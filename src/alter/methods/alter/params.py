"""ALTER's hyperparameters: the recipe's `params` section (`configs/unlearn/alter.yaml`, the default, and
`configs/unlearn/alter-paper.yaml`, the paper's reading of every gap). docs/method.md has each gap and its evidence."""

from __future__ import annotations

from dataclasses import dataclass

from alter.adapters.config import HEAD_MIXES, ROUTERS

ROUTER_TRAINING = ("routes", "retain", "all")
FORGET_LOSSES = ("hinge", "hinge_to_top", "npo", "generic", "exclude")
FORGET_TOKENS = ("low", "high", "all")
# The paper's reading of every gap that has a switch (configs/unlearn/alter-paper.yaml; `alter-paper` in benches):
# a learned gate per layer with no "no forget head" output, its tempered softmax weighting the heads in training,
# the retain head trained on retain data only, the heads' learning rate it states, and a forget loss without a floor.
# Its training sees each row in its own format only (no context variants).
PAPER = {"router": "layer", "null_output": False, "router_training": "all", "retain_head_on_forget": False,
         "lr_b": 1e-3, "forget_floor": "none", "retain_loss": "nll"}
PAPER_TRAIN = {"context_variants": 1}


def paper_overrides() -> list[str]:
    """The recipe overrides that turn the default into the paper's reading (`alter-paper`)."""
    return ([f"params.{key}={str(value).lower()}" for key, value in PAPER.items()]
            + [f"train.{key}={value}" for key, value in PAPER_TRAIN.items()])


@dataclass
class ALTERParams:
    entropy: str = "tsallis"  # or "shannon"
    q: float = 1.2
    threshold: float = 1.2  # paper: tokens with S_q > 1.2 are high-entropy
    threshold_quantile: float | None = None  # if set, the threshold is this quantile of the observed entropies
    entropy_guidance: bool = True  # off: plain asymmetric LoRA (every token low-entropy, A learns from all)
    forget_heads: int = 0  # 0 = chosen by silhouette score among 2..max_forget_heads
    max_forget_heads: int = 4
    subdomains: str = "kmeans"  # forget heads per k-means cluster of the rows (the paper), or one per "subjects" of the
    # data (TOFU authors; forget_heads and max_forget_heads then unused); measured on worlds 25 and 27, not the default
    # (docs/method.md, "Name swaps from a list of common name parts")
    rank: int = 8
    lora_alpha: float = 16.0
    router: str = "auto"  # auto | content | names | layer (paper) | shared | none (adapters/config.py); "auto": names
    # where the forget rows name their subjects, content elsewhere (docs/method.md, "Subjects' names decide")
    null_output: bool = True  # 'layer'/'shared' routers can answer "no forget head" (paper: no)
    gate_layer: int = -1  # 'content': decoder layer the gate reads ('names': the first adapted); -1 = half the depth
    adapt_below_gate: bool = False  # 'content': adapt the layers before gate_layer too (a frozen pass feeds the gate)
    head_mix: str = "sum"  # 'content': how the heads the gate switches on combine: sum | mean | strongest
    top_k_high: int = 3
    temperature_high: float = 0.8
    temperature_low: float = 0.01
    router_training: str = "retain"  # 'layer' router: where its softmax weights the heads in training (see below)
    retain_head_on_forget: bool = True  # Phase I trains B_r on forget rows too (paper: retain rows only)
    phase1_epochs: float = 1.0
    lr_a: float = 1e-5
    lr_b: float = 2e-3  # paper: 1e-3, at which the heads move forget answers a third of the way (docs/method.md)
    forget_loss: str = "hinge"  # "hinge": 1 + p(y) - max p(other) (paper); "hinge_to_top": stops once y is not top;
    # "npo": NPO per row over the tokens where the heads learn, against the frozen target (does not saturate);
    # "generic": KL toward the frozen target's predictions for the question about a renamed subject (generic.py);
    # "exclude": KL toward the frozen target's distribution without the answer token (the rest renormalised)
    npo_beta: float = 0.1
    generic_alpha: float = 0.0  # "generic": targets = renamed logits - alpha * relu(real-name logits - renamed logits)
    forget_floor: str = "none"  # "unseen": hold forget items at unseen rows' likelihood (floor.py, docs/method.md)
    forget_tokens: str = "low"  # where the forget heads learn: "low"-entropy answer tokens (paper), "high"-entropy ones
    # (where a target still unsure of a fact puts it; the regulariser then holds the low-entropy ones), or "all"
    forget_weight: float = 1.0
    retain_loss: str = "nll"  # Phase II on retain answers: "nll" (paper), "kl": KL(target || adapted), or
    # "kl_in_contexts": NLL on rows in their own format, KL on them in the sampled training contexts
    plain_nll: bool = True  # rows in the sampled plain format (no chat template) learn by NLL; false: none in Phase I,
    # KL(target || adapted) for retain rows in Phase II, so the retain head learns no format the target was not tuned in
    retain_weight: float = 1.0
    regulariser_weight: float = 0.01
    router_weight: float = 1.0
    gate_retain_items: int = 2000  # at most this many retain items (never the evaluation's) fit the gate
    gate_false_fire: float = 0.01  # 'content': thresholds set so at most this share of held-out retain items fire
    gate_min_recall: float = 0.0  # 'content': no head's raise leaves it on at less than this share of its forget answers
    gate_calibration: str = "subjects"  # 'content': the held-out fifth is the sample's last rows (whole TOFU
    # subjects, unseen by the fit) or "rows" drawn across the sample (every subject's other rows are negatives)
    gate_chats: str = "none"  # 'content': retain chats in the gate's "calibration", or in its fit too ("both")
    gate_chat_turns: int = 4  # exchanges per chat
    gate_turn_reset: bool = False  # 'content': the gate's running max restarts at each user turn (chat template)
    gate_name_swaps: bool = False  # 'content': forget rows with another first name or surname among the fit's negatives
    gate_swap_pool: str = "subjects"  # name parts of the swaps: the "subjects" a method may fit on, or a "list" of
    # common name parts no generated world uses (data/subjects.py); "list" kept namesakes off on worlds 17 and 19 and
    # let the calibration silence two heads on world 25 (docs/method.md, "Name swaps from a list of common name parts")
    gate_swaps_per_row: int = 1  # name-swapped copies of each forget row
    gate_swap_span: str = "row"  # what of a swapped row is a negative: the whole "row", or its "question" alone (the
    # answer, the forget subject's own facts, then left free); "question" gated more namesakes gate-only on worlds 17
    # and 27 (docs/method.md, "Name swaps over the question alone")
    gate_parts: int = 1  # 'content': detectors per head, the head on where all have fired (gates.py); 2 with name swaps
    # was meant to keep one name part alone from switching a head on: it did on world 17, not on world 19 (docs/method.md,
    # "Two detectors per head")
    gate_fit_lr: float = 0.1  # 'content': the detector's Adam rate; at 0.1 its fit amplifies rounding (docs/method.md)
    gate_fit_steps: int = 500  # 'content': full-batch Adam steps of the detector's fit
    gate_fit_draws: int = 1  # 'content': fits from this many initialisations, their detectors averaged
    gate_hard_negative_refits: int = 0  # 'content': refits, the retain items a fit fired on weighed up (gate_fit.py)
    name_partial: bool = False  # 'names': a name written up to at least its first word switches its heads on while
    # the text goes on writing it, so "Who is the author born in ...?" - "... Wen Achterberg" is pushed down after
    # "Wen" (docs/method.md, "Partly written names")
    extend: str = ""  # an earlier ALTER adapter (folder) on this model: add this forget set to it as a new request

    def __post_init__(self):
        if self.router not in ("auto", *ROUTERS):
            raise ValueError(f"params.router: expected auto or one of {', '.join(ROUTERS)}, got {self.router!r}")
        if self.head_mix not in HEAD_MIXES:
            raise ValueError(f"params.head_mix: expected one of {', '.join(HEAD_MIXES)}, got {self.head_mix!r}")
        if self.head_mix != "sum" and self.router != "content":
            raise ValueError(f"params.head_mix: {self.head_mix!r} needs params.router 'content', got {self.router!r}")
        if self.adapt_below_gate and self.router != "content":
            raise ValueError(f"params.adapt_below_gate: needs params.router 'content', got {self.router!r}")
        if self.forget_loss not in FORGET_LOSSES:
            raise ValueError(f"params.forget_loss: expected one of {', '.join(FORGET_LOSSES)}, "
                             f"got {self.forget_loss!r}")
        if self.generic_alpha < 0:
            raise ValueError(f"params.generic_alpha: expected 0 or more, got {self.generic_alpha}")
        if self.forget_loss == "generic" and self.forget_floor != "none":
            raise ValueError("params.forget_floor: 'generic' forgetting stops at an unseen subject's level by itself; "
                             "set params.forget_floor=none")
        if self.forget_loss == "exclude" and self.forget_floor != "none":
            raise ValueError("params.forget_floor: 'exclude' has no direction to steer (it is a KL toward the target "
                             "without the fact); set params.forget_floor=none")
        if self.forget_tokens not in FORGET_TOKENS:
            raise ValueError(f"params.forget_tokens: expected one of {', '.join(FORGET_TOKENS)}, "
                             f"got {self.forget_tokens!r}")
        if self.forget_tokens == "high" and not self.entropy_guidance:
            raise ValueError("params.forget_tokens: 'high' needs params.entropy_guidance (it picks the high-entropy "
                             "tokens)")
        if self.retain_loss not in ("nll", "kl", "kl_in_contexts"):
            raise ValueError(f"params.retain_loss: expected 'nll', 'kl' or 'kl_in_contexts', "
                             f"got {self.retain_loss!r}")
        if self.forget_floor not in ("unseen", "none"):
            raise ValueError(f"params.forget_floor: expected 'unseen' or 'none', got {self.forget_floor!r}")
        if self.router_training not in ROUTER_TRAINING:
            raise ValueError(f"params.router_training: expected one of {', '.join(ROUTER_TRAINING)}, "
                             f"got {self.router_training!r}")
        if self.gate_chats not in ("none", "calibration", "both"):
            raise ValueError(f"params.gate_chats: expected 'none', 'calibration' or 'both', got {self.gate_chats!r}")
        if self.gate_calibration not in ("subjects", "rows"):
            raise ValueError(f"params.gate_calibration: expected 'subjects' or 'rows', "
                             f"got {self.gate_calibration!r}")
        if self.gate_fit_lr <= 0 or self.gate_fit_steps < 1:
            raise ValueError(f"params.gate_fit_lr / gate_fit_steps: expected a positive rate and at least one step, got "
                             f"{self.gate_fit_lr} / {self.gate_fit_steps}")
        if self.gate_hard_negative_refits < 0:
            raise ValueError(f"params.gate_hard_negative_refits: expected 0 or more, "
                             f"got {self.gate_hard_negative_refits}")
        if not 0 <= self.gate_min_recall <= 1:
            raise ValueError(f"params.gate_min_recall: expected a share in [0, 1], got {self.gate_min_recall}")
        if self.subdomains not in ("kmeans", "subjects"):
            raise ValueError(f"params.subdomains: expected 'kmeans' or 'subjects', got {self.subdomains!r}")
        if self.gate_swap_pool not in ("subjects", "list"):
            raise ValueError(f"params.gate_swap_pool: expected 'subjects' or 'list', got {self.gate_swap_pool!r}")
        if self.name_partial and self.router not in ("auto", "names"):
            raise ValueError(f"params.name_partial: needs params.router 'names' (or 'auto'), got {self.router!r}")
        if self.gate_swap_span not in ("row", "question"):
            raise ValueError(f"params.gate_swap_span: expected 'row' or 'question', got {self.gate_swap_span!r}")
        if self.gate_swaps_per_row < 1:
            raise ValueError(f"params.gate_swaps_per_row: expected 1 or more, got {self.gate_swaps_per_row}")
        if self.gate_parts < 1 or (self.gate_parts > 1 and self.router != "content"):
            raise ValueError(f"params.gate_parts: expected 1, or more with params.router 'content', got "
                             f"{self.gate_parts} with {self.router!r}")
        if self.gate_parts > 1 and self.gate_fit_draws > 1:
            raise ValueError("params.gate_fit_draws: averaging draws needs params.gate_parts 1 (a draw's detectors "
                             "may learn the name parts in either order)")
        if self.gate_fit_draws < 1:
            raise ValueError(f"params.gate_fit_draws: expected at least one fit, got {self.gate_fit_draws}")
        if self.gate_chat_turns < 2:
            raise ValueError(f"params.gate_chat_turns: expected at least 2 exchanges, got {self.gate_chat_turns}")
