"""ALTER (Chen et al., AAAI 2026): token-entropy-guided asymmetric LoRA unlearning, as a recipe read top to bottom.
docs/method.md has the method as implemented, each gap of the paper, the switch that closes it and its evidence.

1. Frozen pass over the forget items: token entropies, pooled hidden states, and the states the gate reads.
2. Sub-domains: k-means on the pooled states, one forget head each.
3. Frozen pass over the retain items: entropies and the states the gate reads.
4. The gate: fitted on the forget items and a sample of retain items that the evaluation does not use; where it
   fires on every item, from the states it read.
5. The high/low threshold, the adapter (`AlterModel`), and the two phases:
   Phase I: A (lr_a) and the retain head (lr_b) learn NLL on high-entropy answer tokens;
   Phase II: forget heads learn the forget loss (`forget_loss`: the inverse hinge or NPO against the frozen
   model) on their own sub-domain's low-entropy answer tokens (or all of them: `forget_tokens`), the retain head NLL
   on retain answers, A from high-entropy tokens only, a KL regulariser keeps high-entropy forget tokens at the
   frozen model's distribution, and a 'layer' router learns its routes. With `params.forget_floor=unseen` the
   forget loss holds each row at the likelihood unseen rows' answers have (`floor.py`).

With `params.extend=ADAPTER` the forget set is a new request added to an earlier adapter (`prepare_request`): new
forget heads and gate rows for it, and only the new heads train (docs/method.md, "Sequential requests").
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from alter.adapters.config import AlterConfig
from alter.adapters.gates import ContentGate, NameGate, SharedRouter
from alter.adapters.model import AlterModel, default_gate_layer, is_alter_adapter
from alter.data.formatting import Context, encode_qa, user_turn_marker
from alter.entropy import EntropySettings, threshold_from
from alter.errors import UserError
from alter.methods.alter.floor import floor_facts, unseen_floors
from alter.methods.alter.gate_fit import fit_content_gate, fit_shared_router
from alter.methods.alter.generic import GenericTargets
from alter.methods.alter.objective import ALTERObjective
from alter.methods.alter.params import ALTERParams
from alter.methods.alter.statistics import hidden_features, item_statistics
from alter.methods.alter.subdomains import agreement_with_groups, choose_subdomains, subject_subdomains
from alter.methods.base import Method, Phase, Plan, Setup


def prepare(setup: Setup) -> Plan:
    params: ALTERParams = setup.params
    if setup.sharded:
        raise UserError("--method alter runs in one process or under DDP: its frozen passes read the whole model, "
                        "which FSDP and DeepSpeed shard")
    if params.extend:
        return prepare_request(setup, params)
    params = resolved_router(params, setup.subjects)
    model, pad = setup.model, setup.tokenizer.pad_token_id
    entropy = EntropySettings(params.entropy, params.q, params.threshold, params.entropy_guidance)
    reads = _gate_reads(model, params)
    patterns, partial = _name_patterns(setup) if params.router == "names" else ([], [])
    forget = item_statistics(model, setup.forget, pad, setup.precision, entropy, pooled=True, feature_layer=reads,
                             answer_logprob=params.forget_floor == "unseen")
    floors, floor = _floors(setup, params, forget, entropy)
    domains, clustering = _subdomains(setup, params, forget)
    # One frozen pass over the retain items serves the gate's fit (a sample of them) and where it fires (all).
    retain = item_statistics(model, setup.retain, pad, setup.precision, entropy, feature_layer=reads)
    gate, gate_facts = _fit_gate(setup, params, forget, domains, retain.features, clustering["heads"])
    answer_entropy = torch.cat([e[item.prompt_length - 1 : -1] for e, item in
                                zip(forget.entropy + retain.entropy, setup.forget + setup.retain)])
    entropy.threshold = threshold_from(answer_entropy, params.threshold, params.threshold_quantile)
    config = AlterConfig(rank=params.rank, alpha=params.lora_alpha, forget_heads=clustering["heads"],
                         router=params.router, null_output=params.null_output, gate_layer=params.gate_layer,
                         adapt_below_gate=params.adapt_below_gate, gate_parts=params.gate_parts,
                         head_mix=params.head_mix, turn_marker=_turn_marker(setup, params), name_patterns=patterns,
                         name_partial=partial if params.name_partial else [],
                         top_k_high=min(params.top_k_high, clustering["heads"] + int(params.null_output)),
                         temperature_high=params.temperature_high, temperature_low=params.temperature_low,
                         entropy=entropy)
    torch.manual_seed(setup.seed)
    adapter = AlterModel(model, config)
    if gate is not None:
        adapter.gate.load_state_dict(gate.state_dict())
    gate_weights = {kind: _gate_weights(gate, stats.features, params.head_mix, items, config.turn_marker)
                    for kind, stats, items in (("forget", forget, setup.forget), ("retain", retain, setup.retain))} \
        if params.router == "content" else None
    if params.router == "names":
        gate_weights = {kind: _name_weights(adapter.names, items) for kind, items in
                        (("forget", setup.forget), ("retain", setup.retain))}
        gate_facts = _name_gate_facts(setup, gate_weights, len(patterns), 0)
    retain.features = None  # the states the gate read: no longer needed, and the largest thing prepare holds
    generic = _generic_targets(setup, params)
    objective = ALTERObjective(adapter, params, {"forget": forget.entropy, "retain": retain.entropy},
                               torch.as_tensor(domains), entropy.threshold, gate_weights, _end_ids(setup), floors,
                               setup.variants, setup.plain, generic)
    phases = [Phase("phase1", objective.phase1, [{"params": adapter.parameters("lora_A"), "lr": params.lr_a},
                                                {"params": adapter.parameters("retain_B"), "lr": params.lr_b}],
                    epochs=params.phase1_epochs),
              Phase("phase2", objective.phase2, [{"params": adapter.parameters("lora_A"), "lr": params.lr_a},
                                                {"params": adapter.parameters("retain_B") + adapter.parameters("forget_B")
                                                 + adapter.parameters("router"), "lr": params.lr_b}])]
    high = answer_entropy > entropy.threshold
    if params.entropy_guidance and not high.any():
        print(f"alter: warning: no answer token has entropy above {entropy.threshold:g}: phase I and the "
              "regulariser have nothing to train on (a memorised target); set params.threshold_quantile, e.g. 0.7",
              file=sys.stderr)
    facts = {"router": params.router, "entropy_threshold": entropy.threshold,
             "high_entropy_fraction": float(high.float().mean()) if params.entropy_guidance else 0.0,
             "clustering": clustering, "gate": gate_facts, "gate_layer": adapter.gate_layer, "forget_floor": floor,
             "generic_rows": generic.rows_renamed if generic else None,
             "adapted_layers": len(adapter.layers), "entropy_histogram": _histogram(answer_entropy.numpy())}
    clusters = {str(i): int(d) for i, d in enumerate(domains[:: setup.variants])}
    return Plan(model, phases, "adapter",
                lambda folder: adapter.save(folder, setup.base_model, {"alter": facts}, clusters), {"alter": facts})


def resolved_router(params: ALTERParams, subjects: list[str]) -> ALTERParams:
    """`router: auto`: the names gate where the forget rows name their subjects (on four worlds whose retain authors
    share a name part with forget authors it never acted on a retain answer, where the content gate did;
    docs/method.md, "Subjects' names decide"), the content gate elsewhere (rows of the user's own files)."""
    if params.router != "auto":
        return params
    if params.name_partial and not subjects:  # else `replace` would fail on name_partial under the content gate
        raise UserError("params.name_partial: needs the names router, and these forget rows name no subject "
                        "(a TOFU-format --data folder whose questions name the author)")
    return replace(params, router="names" if subjects else "content")


def prepare_request(setup: Setup, params: ALTERParams) -> Plan:
    """A new forget request on an earlier adapter: its items get sub-domains, zero forget heads and what switches
    them on (content: gate rows fitted and calibrated as for a first request; names: its subjects' names); Phase II
    trains only those heads. A, the retain head and every earlier head stay bitwise as they were, so removing this
    request later gives back the earlier adapter."""
    folder = Path(params.extend)
    if not is_alter_adapter(folder):
        raise UserError(f"params.extend: {folder} is not an ALTER adapter folder (no alter_config.json)")
    earlier = json.loads((folder / "alter_config.json").read_text())
    router = earlier.get("config", {}).get("router")
    if router not in ("content", "names"):
        raise UserError(f"params.extend: sequential requests need an adapter with router 'content' or 'names' "
                        f"({folder} has {router!r})")
    model, pad = setup.model, setup.tokenizer.pad_token_id
    entropy = EntropySettings(**earlier["config"]["entropy"])
    reads = earlier["config"]["gate_layer"] if router == "content" else None
    # the earlier adapter's router decides, at its layers
    params = replace(params, router=router, gate_layer=earlier["config"]["gate_layer"])
    forget = item_statistics(model, setup.forget, pad, setup.precision, entropy, pooled=True, feature_layer=reads,
                             answer_logprob=params.forget_floor == "unseen")
    floors, floor = _floors(setup, params, forget, entropy)
    domains, clustering = _subdomains(setup, params, forget)
    retain = item_statistics(model, setup.retain, pad, setup.precision, entropy, feature_layer=reads)
    adapter = AlterModel.load(model, folder)
    earlier_heads = adapter.config.forget_heads
    if router == "names":
        patterns, partial = _name_patterns(setup)
        request = adapter.add_request(clustering["heads"], name_patterns=patterns,
                                      name_partial=partial if params.name_partial else None)
        gate_weights = {kind: _name_weights(adapter.names, items) for kind, items in
                        (("forget", setup.forget), ("retain", setup.retain))}
        gate_facts = _name_gate_facts(setup, gate_weights, len(patterns), earlier_heads)
    else:
        new_rows, gate_facts = _fit_gate(setup, params, forget, domains, retain.features, clustering["heads"])
        request = adapter.add_request(clustering["heads"], gate_rows=new_rows)
        gate_weights = {kind: _gate_weights(adapter.gate, stats.features, adapter.config.head_mix, items,
                                            adapter.config.turn_marker)
                        for kind, stats, items in (("forget", forget, setup.forget), ("retain", retain, setup.retain))}
    retain.features = None
    generic = _generic_targets(setup, params)
    objective = ALTERObjective(adapter, params, {"forget": forget.entropy, "retain": retain.entropy},
                               torch.as_tensor(domains + earlier_heads), entropy.threshold, gate_weights,
                               _end_ids(setup), floors, setup.variants, setup.plain, generic)
    heads = adapter.parameters("forget_B")
    for parameter in heads:  # earlier requests' heads receive no gradient, hence no update
        parameter.register_hook(lambda grad: torch.cat([torch.zeros_like(grad[:earlier_heads]), grad[earlier_heads:]]))
    phases = [Phase("phase2", objective.phase2, [{"params": heads, "lr": params.lr_b, "weight_decay": 0.0}])]
    facts = {"request": request, "extends": str(folder), "entropy_threshold": entropy.threshold,
             "forget_floor": floor, "clustering": clustering, "gate": gate_facts, "gate_layer": reads,
             "adapted_layers": len(adapter.layers), "head_requests": adapter.config.requests}
    return Plan(model, phases, "adapter",
                lambda out: adapter.save(out, setup.base_model, {"alter": facts}), {"alter": facts})


def _generic_targets(setup: Setup, params: ALTERParams) -> GenericTargets | None:
    """The renamed forget items of `forget_loss=generic` (generic.py), or None for the other forget losses."""
    if params.forget_loss != "generic":
        return None
    if not any(setup.renamed):
        raise UserError("params.forget_loss=generic: no forget row names a subject found in the data (it needs "
                        "question/answer rows about named subjects, such as TOFU's authors)")
    return GenericTargets(setup.forget, setup.renamed)


def _floors(setup: Setup, params: ALTERParams, forget, entropy: EntropySettings) -> tuple[torch.Tensor | None, dict]:
    """Per forget row, the level its forget loss holds it at (floor.py), from a frozen pass over the unseen rows."""
    if params.forget_floor == "none":
        return None, {"kind": "none"}
    if not setup.unseen:
        note = ("no unseen rows (TOFU: no holdout split beside the forget split; files: no --unseen FILE): "
                "the forget loss has no floor")
        print(f"alter: warning: params.forget_floor=unseen: {note}", file=sys.stderr)
        return None, {"kind": "none", "note": note}
    unseen = item_statistics(setup.model, setup.unseen, setup.tokenizer.pad_token_id, setup.precision, entropy,
                             answer_logprob=True)
    floors = unseen_floors(forget.answer_logprob, unseen.answer_logprob, setup.variants)
    return torch.as_tensor(floors, dtype=torch.float32), floor_facts(forget.answer_logprob, unseen.answer_logprob,
                                                                      floors, setup.variants)


def _end_ids(setup: Setup) -> tuple[int, ...]:
    return tuple(setup.tokenizer.all_special_ids)


def _gate_reads(model, params: ALTERParams) -> int | None:
    """The hidden-state layer the gate is fitted on: the content gate's layer input, the shared router's last layer."""
    if params.router == "content":
        return params.gate_layer if params.gate_layer >= 0 else default_gate_layer(model)
    return -1 if params.router == "shared" else None


def _fit_gate(setup: Setup, params: ALTERParams, forget, domains: np.ndarray, retain_features: list | None,
              heads: int):
    """The content gate or shared router, fitted on every forget item and a seeded sample of the retain items that
    a method may fit on (never the evaluation's); `retain_features`: every retain item's states at the layer read."""
    if retain_features is None:
        return None, None
    allowed = setup.fit_retain if setup.fit_retain is not None else list(range(len(setup.retain)))
    count = min(len(allowed), params.gate_retain_items)
    sample = sorted(np.random.default_rng(setup.seed).choice(allowed, count, replace=False).tolist())
    retain = [retain_features[i] for i in sample]
    prompts = [item.prompt_length for item in setup.forget]
    hidden = setup.model.config.hidden_size
    if params.router == "content":
        fitted, held_out = _calibration_split([item // setup.variants for item in sample], params.gate_calibration,
                                              setup.seed)
        reads = _gate_reads(setup.model, params)
        # The fit's chats hold as many exchanges as its single items (its memory grows with the longest item);
        # the calibration's, one chat per held-out item.
        fit_chats = _chat_features(setup, params, [sample[i] for i in fitted],
                                   len(fitted) // params.gate_chat_turns, reads) if params.gate_chats == "both" else []
        held_out_chats = _chat_features(setup, params, [sample[i] for i in held_out], len(held_out), reads) \
            if params.gate_chats != "none" else []
        swaps = _name_swap_features(setup, params, reads) if params.gate_name_swaps else []
        gate = ContentGate(hidden, heads, params.gate_parts)
        facts = fit_content_gate(gate, forget.features, prompts, domains,
                                 [retain[i] for i in fitted] + fit_chats + swaps, setup.seed,
                                 [retain[i] for i in held_out] + held_out_chats, params.gate_false_fire,
                                 steps=params.gate_fit_steps, lr=params.gate_fit_lr, draws=params.gate_fit_draws,
                                 hard_negative_refits=params.gate_hard_negative_refits,
                                 min_recall=params.gate_min_recall)
        facts["chats"] = {"fit": len(fit_chats), "calibration": len(held_out_chats), "turns": params.gate_chat_turns}
        facts["name_swaps"] = len(swaps)
        facts["name_swap_pool"] = params.gate_swap_pool if swaps else None
        facts["name_swap_span"] = params.gate_swap_span if swaps else None
        facts["parts"] = params.gate_parts
        _warn_if_gate_misses_forget(facts)
    else:
        gate = SharedRouter(hidden, heads + int(params.null_output))
        means = [SharedRouter.running_mean(torch.as_tensor(f)[None], None)[0][0].numpy() for f in forget.features]
        retain_means = [SharedRouter.running_mean(torch.as_tensor(f)[None], None)[0][0].numpy() for f in retain]
        facts = fit_shared_router(gate, means, prompts, domains, retain_means, setup.seed, params.null_output)
    return gate, {**facts, "retain_items": count, "kind": params.router}


def _subdomains(setup: Setup, params: ALTERParams, forget) -> tuple[np.ndarray, dict]:
    """Each forget item's sub-domain (its forget head) and the facts of the choice. Sub-domains are of rows: clustered
    on each row's own format, shared by its other contexts."""
    groups = setup.item_groups[:: setup.variants] if setup.item_groups else None
    if params.subdomains == "subjects":
        if groups is None:
            raise UserError("params.subdomains: 'subjects' needs rows with subjects (a TOFU-format --data folder)")
        rows, clustering = subject_subdomains(groups)
    else:
        rows, clustering = choose_subdomains(forget.pooled[:: setup.variants], params.forget_heads,
                                             params.max_forget_heads, setup.seed)
    clustering["by"] = params.subdomains
    clustering["agreement_with_subjects"] = agreement_with_groups(rows, groups)
    return np.repeat(rows, setup.variants), clustering


def _calibration_split(rows: list[int], kind: str, seed: int) -> tuple[list[int], list[int]]:
    """Positions in the gate's retain sample (items in row order; `rows`: each item's row, an item being a row in one
    of its contexts) that the detector is fitted on and that calibrate its thresholds: a fifth held out. "subjects":
    the last fifth, contiguous rows (whole TOFU authors the fit never sees, as holdout authors are unseen). "rows": a
    seeded fifth of the rows, each in all its sampled contexts, drawn across the sample, so every subject's other rows
    are among the fit's negatives: a retain author who shares a name part with a forget author, held out whole, is
    never shown to the fit, and the calibration can then only silence the heads (world 6, docs/method.md)."""
    if kind == "rows":
        distinct = sorted(set(rows))
        chosen = set(np.random.default_rng([seed, len(rows)]).permutation(distinct)[: len(distinct) // 5].tolist())
        held_out = [i for i, row in enumerate(rows) if row in chosen]
    else:
        held_out = list(range(len(rows) - len(rows) // 5, len(rows)))
    calibrating = set(held_out)
    return [i for i in range(len(rows)) if i not in calibrating], held_out


def _warn_if_gate_misses_forget(facts: dict) -> None:
    """A head off on most of its sub-domain's forget answers leaves them unforgotten, and the run would say nothing.
    Seen at a low fitting rate, where the calibration had to raise the thresholds far (docs/method.md, "The lower
    fitting rate on held-out units"), after a complete fit on world 6, whose calibration items include a retain
    author who shares a surname with a forget author (docs/method.md, "What stands in the way"), and for one head of
    two on world 11 with `train.context_plain_format=false`, where the gate's overall recall (50%) hid it
    (docs/method.md, "Training contexts without the plain format")."""
    per_head, fitted = facts["forget_answer_recall_per_head"], facts["forget_answer_recall_per_head_before_calibration"]
    missed = [head for head, recall in enumerate(per_head) if recall < 0.5]
    if not missed:
        return
    worst = min(missed, key=per_head.__getitem__)
    cause = ("some of its held-out retain items score as high as the forget answers (e.g. another subject with "
             "the same first name or surname); params.gate_min_recall caps the raise (docs/method.md)"
             if fitted[worst] >= 0.5 else
             "check params.gate_fit_lr and gate_fit_steps (the detector may not have finished fitting)")
    print(f"alter: warning: the gate is on for {facts['forget_answer_recall']:.0%} of the forget answers it was "
          f"fitted on, head {worst} for {per_head[worst]:.0%} of its sub-domain's ({fitted[worst]:.0%} before its "
          f"calibration raised its threshold by {facts['threshold_shift'][worst]:.3g}); {len(missed)} of "
          f"{len(per_head)} forget heads will act on few of their forget tokens: {cause}", file=sys.stderr)


def _chat_features(setup: Setup, params: ALTERParams, items: list[int], count: int, reads: int) -> list[np.ndarray]:
    """The gate layer's states over `count` chats of `params.gate_chat_turns` exchanges each, seeded draws of the rows
    of `items` (the fit's rows for the fit, the held-out rows for the calibration). A false fire
    anywhere in a chat stays on for the rest of it (the running max), and later turns read earlier ones: a gate
    fitted and calibrated on single exchanges alone fired on every answer after one few-shot prefix (docs/method.md,
    "Chats of retain exchanges")."""
    turns = params.gate_chat_turns
    rows = sorted({item // setup.variants for item in items})
    if not setup.retain_turns or len(rows) < turns:
        return []
    rng = np.random.default_rng(setup.seed + 1)
    chats = []
    for _ in range(count):
        chosen = [setup.retain_turns[row] for row in rng.choice(rows, turns, replace=False)]
        chats.append(encode_qa(setup.tokenizer, *chosen[-1], Context(history=tuple(chosen[:-1]))))
    return hidden_features(setup.model, chats, setup.tokenizer.pad_token_id, setup.precision, reads)


def _name_swap_features(setup: Setup, params: ALTERParams, reads: int) -> list[np.ndarray]:
    """The gate layer's states over the forget rows with another first name or surname (data/subjects.py), in the
    default format: negatives meant to keep a head off for another subject who shares a name part with a forget
    subject (measured, and not doing so on world 5: docs/method.md, "Name swaps"). With `gate_swap_span` "question"
    only the prompt's states: the answer keeps the forget subject's facts, and a whole-row negative tells the detector
    to stay off over them too, so it can key on nothing but the name."""
    rows = setup.name_swaps(params.gate_swap_pool, params.gate_swaps_per_row)
    if not rows:
        print("alter: warning: params.gate_name_swaps: no forget row names a subject found in the data (TOFU-format "
              "folders only); the gate is fitted without name swaps", file=sys.stderr)
        return []
    items = [encode_qa(setup.tokenizer, question, answer) for question, answer in rows]
    features = hidden_features(setup.model, items, setup.tokenizer.pad_token_id, setup.precision, reads)
    if params.gate_swap_span == "question":
        return [states[: item.prompt_length] for states, item in zip(features, items)]
    return features


def _turn_marker(setup: Setup, params: ALTERParams) -> list[int]:
    if not params.gate_turn_reset:
        return []
    if params.router != "content":
        raise UserError(f"params.gate_turn_reset: needs params.router=content, got {params.router!r}")
    marker = user_turn_marker(setup.tokenizer)
    if not marker:
        raise UserError("params.gate_turn_reset: the tokenizer has no chat template that marks a user turn")
    return marker


@torch.no_grad()
def _gate_weights(gate: ContentGate, features: list[np.ndarray], mix: str, items: list, marker: list[int]) -> list:
    """Per item, the fitted content gate's forget-head weights at each position ([tokens, N]), as at inference (the
    running max restarting at each user turn when there is a `marker`)."""
    device = gate.detector.weight.device
    weights = []
    for f, item in zip(features, items, strict=True):
        starts = ContentGate.turn_starts(torch.as_tensor([item.input_ids], device=device), marker) if marker else None
        pooled = gate.pooled_scores(torch.as_tensor(f, device=device)[None], starts=starts)[0]
        weights.append(ContentGate.weights(gate.combined(pooled), mix).cpu().numpy())
    return weights


def _name_patterns(setup: Setup) -> tuple[list[list[int]], list[int]]:
    """Router 'names': each forget subject's name as token ids, after a space and at a text's start (where the
    tokenizer writes it differently), and per pattern how many of its tokens write the first word (the shortest
    partly written name `name_partial` switches heads on at; 0 where the first word's tokens are not the pattern's
    own first tokens)."""
    if not setup.subjects:
        raise UserError("params.router: 'names' needs forget rows that name their subjects (a TOFU-format --data "
                        "folder whose questions name the author)")
    found: dict[tuple, int] = {}
    for name in setup.subjects:
        for space in (" ", ""):
            pattern = tuple(_token_ids(setup, space + name))
            first = _token_ids(setup, space + name.split()[0])
            writes_first = len(first) < len(pattern) and list(pattern[: len(first)]) == first
            found.setdefault(pattern, len(first) if writes_first else 0)
    return [list(pattern) for pattern in found], list(found.values())


def _token_ids(setup: Setup, text: str) -> list[int]:
    return setup.tokenizer(text, add_special_tokens=False)["input_ids"]


def _name_weights(names: NameGate, items: list) -> list[np.ndarray]:
    """Per item, the forget-head weights ([tokens, N]) of the 'names' router, as at inference."""
    return [names.on(torch.as_tensor([item.input_ids]), None, None)[0][0].float().numpy() for item in items]


def _name_gate_facts(setup: Setup, weights: dict, patterns: int, first_head: int) -> dict:
    """How often this request's names (its heads from `first_head` on) match: the share of forget answer tokens with
    its heads on, of forget items whose prompt names a subject, and of retain items on which they switch on
    anywhere."""
    own = {kind: [w[:, first_head] for w in rows] for kind, rows in weights.items()}
    answers = np.concatenate([w[item.prompt_length :] for w, item in zip(own["forget"], setup.forget)])
    facts = {"kind": "names", "names": setup.subjects, "patterns": patterns,
             "forget_answer_recall": float(answers.mean()),
             "forget_prompts_named": float(np.mean([w[item.prompt_length - 1] for w, item in
                                                    zip(own["forget"], setup.forget)])),
             "retain_fire_rate": float(np.mean([w.any() for w in own["retain"]])) if own["retain"] else 0.0}
    if facts["forget_prompts_named"] < 0.5:
        print(f"alter: warning: router 'names': only {facts['forget_prompts_named']:.0%} of the forget questions name "
              f"a forget subject ({', '.join(setup.subjects)}) as written; the forget heads act only after a name",
              file=sys.stderr)
    return facts


def _histogram(values: np.ndarray, bins: int = 60) -> dict:
    counts, edges = np.histogram(values, bins=bins)
    return {"edges": edges.round(4).tolist(), "counts": counts.tolist(), "kind": "answer tokens, forget + retain"}


METHOD = Method(
    "alter",
    "ALTER: token-entropy-guided asymmetric LoRA (shared A, one forget head per sub-domain, retain head, gate)",
    ALTERParams, prepare, uses_lora=False, uses_learning_rate=False, sparse_gradients=True,
    train_defaults={"epochs": 3.0, "batch_size": 4, "context_variants": 3},
)
