"""`alter report RUN_DIR`: one self-contained HTML file (figures embedded) plus the PNGs, from a bench, a demo or one
unlearning run.

The report only reads what the runs wrote: `bench.json`, manifests, evaluation logs and `TOKENS.json`. The
per-token view compares the target's evaluation log (before) with a method's (after); for a single unlearning run
it reads the token records that `alter unlearn` wrote while it had the model.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from alter.errors import UserError
from alter.evaluation.probes import FAMILIES
from alter.io import write_text
from alter.metrics.aggregate import forgetting_verdict
from alter.report import plots

HEAD_COLORS = ("#8172b3", "#dd8452", "#55a868", "#c44e52", "#937860", "#da8bc3", "#8c8c8c", "#ccb974")
TOKEN_ITEMS = 4  # forget and retain answers shown token by token, per method
VERDICT_KEYS = {"tofu": ("forget_Q_A_Prob", "forget answers' probability"),  # what each bench's verdict compares
                "muse": ("forget_knowmem_ROUGE", "forget KnowMem ROUGE"),
                "wmdp": ("hazardous_cloze_accuracy", "hazardous cloze accuracy")}
TABLES = {
    "Forgetting (lower is more forgotten, except forget_quality: higher is better)":
        ("forget_quality", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_nll", "forget_verbmem_ROUGE",
         "forget_knowmem_ROUGE", "hazardous_accuracy", "hazardous_cloze_accuracy", "privleak", "mia_min_k"),
    "Keeping (higher is better, except retain_nll)":
        ("model_utility", "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_nll", "retain_knowmem_ROUGE",
         "general_accuracy", "general_cloze_accuracy"),
    "Cost": ("trainable_parameters", "wall_seconds", "eval_seconds", "peak_memory_mb"),
}


@dataclass
class TokenRow:
    text: str
    before: float
    after: float
    high: bool
    route: int | None  # ALTER: 0 = no forget head, k = forget head k; None for other methods


@dataclass
class TokenView:
    run: str
    subset: str  # "forget" or "retain"
    question: str
    tokens: list[TokenRow]


@dataclass
class ReportData:
    title: str
    command: str
    rows: dict[str, dict]
    verdicts: list[str] = field(default_factory=list)
    curves: dict[str, list[dict]] = field(default_factory=dict)
    histogram: dict | None = None
    views: list[TokenView] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    paired: dict | None = None  # bench.json's `paired`: each run minus the bench's first run, over shared units


def build_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if (run_dir / "bench.json").is_file():
        data = _bench_data(run_dir)
    elif _manifest(run_dir).get("kind") == "unlearn":
        data = _unlearn_data(run_dir)
    else:
        raise UserError(f"{run_dir}: not a run (no bench.json, and no manifest.json of `alter unlearn`)")
    figures = _write_figures(data, run_dir / "report")
    path = run_dir / "report.html"
    write_text(path, render(data, figures))
    return path


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None


def _manifest(folder: Path) -> dict:
    path = Path(folder) / "manifest.json"
    return _read(path) if path.is_file() else {}


def _bench_data(run_dir: Path) -> ReportData:
    bench = _read(run_dir / "bench.json")
    rows = bench["rows"]
    worlds = len([w for w in bench["worlds"] if not w["tuning"]]) or 1
    suite = bench.get("suite", "tofu")
    data = ReportData(title=f"{suite.upper()}: unlearning {bench['forget_split']} from {bench['model']} ({worlds} world"
                            f"{'s' if worlds > 1 else ''}, {len(bench['seeds'])} seed{'s' if len(bench['seeds']) > 1 else ''})",
                      command=f"alter report {run_dir}", rows=rows, paired=bench.get("paired"))
    data.verdicts = [bench_verdict(name, row, rows["target"], suite) for name, row in rows.items()
                     if name not in ("target", "retain")]
    for name, row in rows.items():
        manifest = _manifest(Path(row["run_dir"])) if row.get("run_dir") else {}
        data.curves[name] = manifest.get("loss_curve", [])
        if data.histogram is None and "entropy_histogram" in manifest.get("alter", {}):
            data.histogram = _histogram(manifest["alter"])
    before = _eval_log(Path(rows["target"]["eval_dir"]))
    for name, row in rows.items():
        if name in ("target", "retain") or before is None:
            continue
        after = _eval_log(Path(row["eval_dir"]))
        if after is not None:
            data.views.extend(_views_from_logs(name, before, after))
    if worlds > 1 or len(bench["seeds"]) > 1:
        over = "the tuning world's units" if all(w["tuning"] for w in bench["worlds"]) else "the held-out worlds"
        data.notes.append(f"Values are means over {over} and seeds; bench.md has the 95% intervals. "
                          "Token views and curves are of the first world and seed.")
    return data


def bench_verdict(name: str, row: dict, target: dict, suite: str = "tofu") -> str:
    """One line per run: forgot or not, what comes back out of sample, what ALTER's gate did on retain answers."""
    key, what = VERDICT_KEYS[suite]
    parts = [forgetting_verdict(target[key], row[key], what=what)[1]]
    undone = {f: row.get(f"undone_{f}") for f in FAMILIES if row.get(f"undone_{f}") is not None}
    if undone:
        worst = max(undone, key=undone.get)
        parts.append(f"out of sample, up to {max(0.0, undone[worst]):.0%} of it comes back ({worst})")
    gates = [v for k, v in row.items() if k.startswith("retain") and k.endswith("_gate_rate") and v is not None]
    if gates:
        parts.append(f"forget heads act on up to {max(gates):.1%} of retain answer tokens")
    return f"{name}: " + "; ".join(parts)


def _histogram(facts: dict) -> dict:
    return {**facts["entropy_histogram"], "threshold": facts["entropy_threshold"],
            "high_fraction": facts["high_entropy_fraction"]}


def _eval_log(folder: Path) -> dict | None:
    path = folder / "TOFU_EVAL.json"
    return _read(path) if path.is_file() else None


def _views_from_logs(run: str, before: dict, after: dict) -> list[TokenView]:
    """The first TOKEN_ITEMS forget and retain items that both logs recorded token by token."""
    views = []
    for subset in ("forget", "retain"):
        pairs = [(item, before[subset]["items"].get(index, {}).get("tokens"))
                 for index, item in after[subset]["items"].items()]
        pairs = [(item, old) for item, old in pairs if old is not None and "tokens" in item][:TOKEN_ITEMS]
        views += [TokenView(run, subset, item["question"], _token_rows(old, item["tokens"])) for item, old in pairs]
    return views


def _token_rows(before: dict, after: dict) -> list[TokenRow]:
    routes = after.get("route") or [None] * len(before["text"])
    return [TokenRow(text, p0, p1, bool(h), r)
            for text, p0, p1, h, r in zip(before["text"], before["prob"], after["prob"], before["high"], routes)]


def _unlearn_data(run_dir: Path) -> ReportData:
    manifest = _manifest(run_dir)
    name = manifest["method"]
    row = {"method": name, "trainable_parameters": manifest["parameters"]["trainable"],
           "wall_seconds": manifest["wall_seconds"], "peak_memory_mb": manifest["peak_memory_mb"]}
    source = manifest.get("forget_split") or manifest.get("forget_file")
    data = ReportData(title=f"{name} on {source}", command=f"alter report {run_dir}", rows={name: row},
                      curves={name: manifest.get("loss_curve", [])})
    if "entropy_histogram" in manifest.get("alter", {}):
        data.histogram = _histogram(manifest["alter"])
    tokens_path = run_dir / "TOKENS.json"
    if tokens_path.is_file():
        tokens = _read(tokens_path)
        data.verdicts.append(f"{name}: {tokens['verdict']['line']}")
        data.views = [TokenView(name, subset, label, _token_rows(old, new))
                      for subset, labels in tokens["rows"].items()
                      for label, old, new in zip(labels, tokens["before"][subset], tokens["after"][subset])]
    data.notes.append("A single run has no evaluation: `alter eval tofu` or `alter bench tofu` give the metrics, out "
                      "of sample included.")
    return data


def _write_figures(data: ReportData, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    figures = {}
    if any(row.get("forget_quality") is not None for row in data.rows.values()):
        figures["quality_utility"] = folder / "quality_utility.png"
        plots.quality_utility(data.rows, figures["quality_utility"])
    if data.histogram:
        figures["entropy"] = folder / "entropy_histogram.png"
        plots.entropy_histogram_from_counts(data.histogram["edges"], data.histogram["counts"],
                                            data.histogram["threshold"], "Token entropy under the frozen target",
                                            figures["entropy"])
    if any(data.curves.values()):
        figures["curves"] = folder / "training_curves.png"
        plots.training_curves(data.curves, figures["curves"])
    return figures


def render(data: ReportData, figures: dict[str, Path]) -> str:
    sections = [f"<h1>{html.escape(data.title)}</h1>",
                f"<p class=note>Made by <code>{html.escape(data.command)}</code>.</p>"]
    if data.verdicts:
        sections.append("<ul class=verdicts>" + "".join(f"<li>{html.escape(v)}</li>" for v in data.verdicts) + "</ul>")
    sections.append("<h2>Results</h2>")
    sections += [_table(caption, keys, data.rows) for caption, keys in TABLES.items()]
    sections.append(_undone_table(data.rows))
    sections.append(_paired_table(data.paired))
    sections.append(_gate_table(data.rows))
    sections.append(_audit_table(data.rows))
    sections += [f"<p class=note>{html.escape(note)}</p>" for note in data.notes]
    captions = {"quality_utility": "Forget quality against model utility. Target and retain are reference points; "
                                   "the dotted line is forget quality 0.1.",
                "entropy": "Token entropy of forget and retain answers under the frozen target, with the "
                           "high/low threshold.",
                "curves": "Training loss of every run (ALTER: phase I, then phase II, split by the dashed line)."}
    for key, caption in captions.items():
        if key in figures:
            if key == "entropy" and data.histogram.get("high_fraction") == 0:
                caption += (" No answer token is above the threshold: the high-entropy class is empty, so phase I "
                            "and the regulariser train nothing (set params.threshold_quantile).")
            sections.append(f"<figure><img alt='{key}' src='data:image/png;base64,"
                            f"{base64.b64encode(figures[key].read_bytes()).decode()}'>"
                            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    if data.views:
        sections.append(_token_section(data.views))
    return PAGE.format(title=html.escape(data.title), body="\n".join(sections))


def _table(caption: str, keys: tuple[str, ...], rows: dict[str, dict]) -> str:
    keys = [key for key in keys if any(row.get(key) is not None for row in rows.values())]
    if not keys:
        return ""
    head = "".join(f"<th>{html.escape(key)}</th>" for key in keys)
    body = "".join(f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{_number(row.get(key))}</td>" for key in keys)
                   + "</tr>" for name, row in rows.items())
    return f"<table><caption>{html.escape(caption)}</caption><tr><th>run</th>{head}</tr>{body}</table>"


def _undone_table(rows: dict[str, dict]) -> str:
    families = [f for f in ("in_sample", *FAMILIES) if any(r.get(f"undone_{f}") is not None for r in rows.values())]
    if len(families) < 2:
        return ""
    methods = {name: row for name, row in rows.items() if name not in ("target", "retain")}
    head = "".join(f"<th>{html.escape(name)}</th>" for name in methods)
    body = "".join(f"<tr><th>{html.escape(f)}</th>" + "".join(f"<td>{_number(row.get(f'undone_{f}'))}</td>"
                                                              for row in methods.values()) + "</tr>" for f in families)
    return ("<table><caption>Undone: share of the forgotten probability that comes back (0 = as the retain model, "
            f"1 = as the target), per probe family</caption><tr><th>probe</th>{head}</tr>{body}</table>")


def _paired_table(paired: dict | None) -> str:
    if not paired or not paired["rows"]:
        return ""
    keys = paired["keys"]

    def cell(row: dict, key: str) -> str:
        spread = row["intervals"].get(key, {})
        half = "" if spread.get("low") is None else f" &plusmn; {(spread['high'] - spread['low']) / 2:.2g}"
        return f"<td>{_number(row.get(key))}{half}</td>"

    head = "".join(f"<th>{html.escape(key)}</th>" for key in keys)
    body = "".join(f"<tr><th>{html.escape(name)}</th><td>{row['units']}</td>" + "".join(cell(row, k) for k in keys)
                   + "</tr>" for name, row in paired["rows"].items())
    baseline = html.escape(paired["baseline"])
    return (f"<table><caption>Paired against {baseline}: each run minus {baseline} on the same worlds and seeds, mean "
            f"&plusmn; 95% half-interval</caption><tr><th>run</th><th>units</th>{head}</tr>{body}</table>")


def _gate_table(rows: dict[str, dict]) -> str:
    """ALTER's router diagnostics: the share of answer tokens a forget head acted on, forget / retain, per probe."""
    gated = {name: row for name, row in rows.items() if row.get("forget_gate_rate") is not None}
    if not gated:
        return ""
    families = [f for f in FAMILIES if any(row.get(f"forget_probe_{f}_gate_rate") is not None for row in gated.values())]

    def cell(row: dict, family: str | None) -> str:
        forget, retain = (("forget_gate_rate", "retain_gate_rate") if family is None else
                          (f"forget_probe_{family}_gate_rate", f"retain_probe_{family}_gate_rate"))
        return f"{_number(row.get(forget))} / {_number(row.get(retain))}"

    head = "".join(f"<th>{html.escape(name)}</th>" for name in gated)
    body = "".join(f"<tr><th>{html.escape(f or 'in sample')}</th>" + "".join(f"<td>{cell(row, f)}</td>"
                                                                            for row in gated.values()) + "</tr>"
                   for f in (None, *families))
    extra = "".join(f"<tr><th>{key}</th>" + "".join(f"<td>{_number(row.get(f'{key}_gate_rate'))}</td>"
                                                    for row in gated.values()) + "</tr>"
                    for key in ("holdout", "ra", "wf") if any(row.get(f"{key}_gate_rate") is not None
                                                             for row in gated.values()))
    return ("<table><caption>ALTER's gate: share of answer tokens a forget head acted on, forget / retain answers, "
            "per probe family (holdout, real authors, world facts: one share each)</caption>"
            f"<tr><th>probe</th>{head}</tr>{body}{extra}</table>")


def _audit_table(rows: dict[str, dict]) -> str:
    """`alter bench --audit`: undone after each attack, one row per attack."""
    attacks = list(dict.fromkeys(k for row in rows.values() for k in row if k.startswith("audit_")
                                 and k.endswith("_undone")))
    if not attacks:
        return ""
    methods = {name: row for name, row in rows.items() if name not in ("target", "retain")}
    head = "".join(f"<th>{html.escape(name)}</th>" for name in methods)
    body = "".join(f"<tr><th>{html.escape(k.removeprefix('audit_').removesuffix('_undone'))}</th>"
                   + "".join(f"<td>{_number(row.get(k))}</td>" for row in methods.values()) + "</tr>"
                   for k in attacks)
    return ("<table><caption>Audit (docs/audit.md): share of the forgotten probability back after each attack (0 = "
            "the retain model under the same attack, 1 = the target under it)</caption>"
            f"<tr><th>attack</th>{head}</tr>{body}</table>")


def _number(value) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.3g}"


def _token_section(views: list[TokenView]) -> str:
    heads = sorted({t.route for v in views for t in v.tokens if t.route})
    legend = "".join(f"<span class=key style='border-top-color:{HEAD_COLORS[(h - 1) % len(HEAD_COLORS)]}'>"
                     f"forget head {h}</span>" for h in heads)
    parts = ["<h2>What was forgotten, token by token</h2>",
             "<p class=note>Each answer token of the ground-truth answer: its probability under the target (before) "
             "and after unlearning. Background: <span class='tok high'>high-entropy</span> or "
             "<span class='tok low'>low-entropy</span> token under the frozen target. Under each token: its "
             "probability before (upper) and after (lower, redder when it fell).</p>"]
    if heads:
        parts.append(f"<p class=note>Top bar (ALTER): the forget head that acted on the token; none when no forget "
                     f"head did. {legend}</p>")
    by_run: dict[str, list[TokenView]] = {}
    for view in views:
        by_run.setdefault(view.run, []).append(view)
    for position, (run, run_views) in enumerate(by_run.items()):
        parts.append(f"<details{' open' if position == 0 else ''}><summary>{html.escape(run)}</summary>")
        for view in run_views:
            parts.append(f"<div class='item {view.subset}'><div class=q><b>{view.subset}</b> "
                         f"{html.escape(view.question)}</div><div class=tokens>"
                         + "".join(_token_html(token) for token in view.tokens) + "</div></div>")
        parts.append("</details>")
    return "\n".join(parts)


def _token_html(token: TokenRow) -> str:
    color = "transparent" if not token.route else HEAD_COLORS[(token.route - 1) % len(HEAD_COLORS)]
    route = "" if token.route is None else f"; {'head ' + str(token.route) if token.route else 'no forget head'}"
    drop = max(0.0, token.before - token.after)
    title = f"before {token.before:.3f}, after {token.after:.3f}{route}"
    return (f"<span class='tok {'high' if token.high else 'low'}' style='border-top-color:{color}' "
            f"title='{html.escape(title)}'><span class=t>{html.escape(token.text) or '&nbsp;'}</span>"
            f"<span class=p>{token.before:.2f}</span>"
            f"<span class=p style='color:rgb({int(40 + 200 * drop)},40,40)'>{token.after:.2f}</span></span>")


PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; line-height: 1.4; }}
table {{ border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }}
caption {{ text-align: left; font-weight: bold; padding: 0.3em 0; }}
th, td {{ border: 1px solid #ddd; padding: 4px 8px; text-align: right; }}
tr:nth-child(even) {{ background: #f7f7f7; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
figcaption, .note {{ color: #555; font-size: 0.9em; }}
.verdicts {{ background: #f4f6fa; padding: 0.6em 1.6em; border-left: 4px solid #4c72b0; }}
.item {{ margin: 0.8em 0; padding: 0.4em; border-left: 4px solid #ccc; }}
.item.forget {{ border-left-color: #c44e52; }} .item.retain {{ border-left-color: #55a868; }}
.tok {{ display: inline-flex; flex-direction: column; align-items: center; margin: 1px; padding: 1px 3px;
        border-top: 4px solid transparent; border-radius: 3px; font-size: 0.85em; }}
.tok.high {{ background: #fde68a; }} .tok.low {{ background: #dbeafe; }}
.key {{ display: inline-block; margin: 0 0.5em; padding: 0 4px; border-top: 4px solid; }}
.tok .t {{ white-space: pre; font-family: ui-monospace, monospace; }} .tok .p {{ font-size: 0.75em; }}
summary {{ font-weight: bold; cursor: pointer; margin-top: 1em; }}
</style></head>
<body>
{body}
</body></html>
"""
