"""`alter report RUN_DIR`: one self-contained HTML file (figures embedded) plus the PNGs, from a bench, a demo or one
unlearning run.

The report only reads what the runs wrote: `bench.json`, manifests and TOFU evaluation logs. The per-token view
compares the target's evaluation log (before) with a method's (after); for a single unlearning run, which has no
evaluation, it scores a few forget and retain answers with the target and the unlearned model first.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from alter.errors import UserError
from alter.evaluation.bench import TABLE_KEYS
from alter.io import write_text
from alter.report import plots

HEAD_COLORS = ("#8172b3", "#dd8452", "#55a868", "#c44e52", "#937860", "#da8bc3", "#8c8c8c", "#ccb974")
TOKEN_ITEMS = 4  # forget and retain answers shown token by token, per method


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
    curves: dict[str, list[dict]] = field(default_factory=dict)
    histogram: dict | None = None
    views: list[TokenView] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


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


def _manifest(folder: Path) -> dict:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None


def _bench_data(run_dir: Path) -> ReportData:
    bench = json.loads((run_dir / "bench.json").read_text())
    rows = bench["rows"]
    data = ReportData(title=f"Unlearning {bench['forget_split']} of {Path(bench['data']).name} from {bench['model']}",
                      command=f"alter report {run_dir}", rows=rows)
    for name, row in rows.items():
        manifest = _manifest(Path(row.get("run_dir", run_dir / "runs" / name)))
        data.curves[name] = manifest.get("loss_curve", [])
        if data.histogram is None and "entropy_histogram" in manifest.get("alter", {}):
            data.histogram = {**manifest["alter"]["entropy_histogram"],
                              "threshold": manifest["alter"]["entropy_threshold"]}
    before = _eval_log(Path(rows["target"].get("eval_dir", run_dir / "eval" / "target")))
    for name, row in rows.items():
        if name in ("target", "retain") or before is None:
            continue
        after = _eval_log(Path(row.get("eval_dir", run_dir / "eval" / name)))
        if after is not None:
            data.views.extend(_views_from_logs(name, before, after))
    if before is None:
        data.notes.append("No per-token view: the target's evaluation log has no token records.")
    return data


def _eval_log(folder: Path) -> dict | None:
    path = folder / "TOFU_EVAL.json"
    return json.loads(path.read_text()) if path.is_file() else None


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
    high = after.get("route_high") or [value > 1.2 for value in before["entropy"]]
    routes = after.get("route") or [None] * len(before["text"])
    return [TokenRow(text, p0, p1, bool(h), r)
            for text, p0, p1, h, r in zip(before["text"], before["prob"], after["prob"], high, routes)]


def _unlearn_data(run_dir: Path) -> ReportData:
    manifest = _manifest(run_dir)
    row = {"method": manifest["method"], "trainable_parameters": manifest["parameters"]["trainable"],
           "wall_seconds": manifest["wall_seconds"], "peak_memory_mb": manifest["peak_memory_mb"],
           "tokens_per_second": manifest["tokens_per_second"]}
    data = ReportData(title=f"{manifest['method']} on {manifest['forget_split']} of {Path(manifest['data']).name}",
                      command=f"alter report {run_dir}", rows={manifest["method"]: row},
                      curves={manifest["method"]: manifest.get("loss_curve", [])})
    if "entropy_histogram" in manifest.get("alter", {}):
        data.histogram = {**manifest["alter"]["entropy_histogram"], "threshold": manifest["alter"]["entropy_threshold"]}
    data.notes.append("A single run has no TOFU evaluation: run `alter eval tofu` or `alter bench tofu` for the "
                      "metrics. The token view below scores a few answers with the target and the unlearned model.")
    data.views = _score_token_views(manifest, run_dir)
    return data


def _score_token_views(manifest: dict, run_dir: Path) -> list[TokenView]:
    from alter.data.tofu import TofuData
    from alter.evaluation.tofu import EvalSettings, TofuEvaluation
    from alter.models import default_device
    from alter.models.loading import load_model_with_adapter

    data = TofuData(manifest["data"])
    subsets = {"forget": data.load(manifest["forget_split"])[:TOKEN_ITEMS],
               "retain": data.load(manifest["retain_split"])[:TOKEN_ITEMS]}
    after = (manifest["base_model"], str(run_dir)) if manifest["output"] == "adapter" else (str(run_dir), None)
    logs = {}
    for moment, (model_spec, adapter) in (("before", (manifest["base_model"], None)), ("after", after)):
        model, tokenizer = load_model_with_adapter(model_spec, adapter)
        model.to(default_device()).eval()
        evaluation = TofuEvaluation(model, tokenizer, data, manifest["forget_split"], EvalSettings())
        logs[moment] = {name: evaluation.token_logs(rows) for name, rows in subsets.items()}
    return [TokenView(manifest["method"], name, row["question"], _token_rows(old, new))
            for name, rows in subsets.items()
            for row, old, new in zip(rows, logs["before"][name], logs["after"][name])]


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
                f"<p class=note>Made by <code>{html.escape(data.command)}</code>.</p>",
                "<h2>Results</h2>", _table(data.rows)]
    sections += [f"<p class=note>{html.escape(note)}</p>" for note in data.notes]
    captions = {"quality_utility": "Forget quality against model utility. Target and retain are reference points; "
                                   "the dotted line is forget quality 0.1.",
                "entropy": "Token entropy of forget and retain answers under the frozen target, with the "
                           "high/low threshold.",
                "curves": "Training loss of every run."}
    for key, caption in captions.items():
        if key in figures:
            sections.append(f"<figure><img alt='{key}' src='data:image/png;base64,"
                            f"{base64.b64encode(figures[key].read_bytes()).decode()}'>"
                            f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    if data.views:
        sections.append(_token_section(data.views))
    return PAGE.format(title=html.escape(data.title), body="\n".join(sections))


def _table(rows: dict[str, dict]) -> str:
    keys = [key for key in (*TABLE_KEYS, "trainable_parameters", "wall_seconds", "peak_memory_mb", "tokens_per_second")
            if any(row.get(key) is not None for row in rows.values())]
    head = "".join(f"<th>{html.escape(key)}</th>" for key in keys)
    body = "".join(f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{_number(row.get(key))}</td>" for key in keys)
                   + "</tr>" for name, row in rows.items())
    return f"<div class=scroll><table><tr><th>run</th>{head}</tr>{body}</table></div>"


def _number(value) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.3g}"


def _token_section(views: list[TokenView]) -> str:
    parts = ["<h2>What was forgotten, token by token</h2>",
             "<p class=note>Each answer token of the ground-truth answer: its probability under the target (before) "
             "and after unlearning. Background: <span class='tok high'>high-entropy</span> or "
             "<span class='tok low'>low-entropy</span> token under the frozen target. Top bar (ALTER): the forget "
             "head most layers routed the token to; none when no forget head was on. Under each token: its probability "
             "before (upper) and after (lower, redder when it fell).</p>"]
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
.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }}
th, td {{ border: 1px solid #ddd; padding: 4px 8px; text-align: right; }}
tr:nth-child(even) {{ background: #f7f7f7; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
figcaption, .note {{ color: #555; font-size: 0.9em; }}
.item {{ margin: 0.8em 0; padding: 0.4em; border-left: 4px solid #ccc; }}
.item.forget {{ border-left-color: #c44e52; }} .item.retain {{ border-left-color: #55a868; }}
.tok {{ display: inline-flex; flex-direction: column; align-items: center; margin: 1px; padding: 1px 3px;
        border-top: 4px solid transparent; border-radius: 3px; font-size: 0.85em; }}
.tok.high {{ background: #fde68a; }} .tok.low {{ background: #dbeafe; }}
.tok .t {{ white-space: pre; font-family: ui-monospace, monospace; }} .tok .p {{ font-size: 0.75em; }}
summary {{ font-weight: bold; cursor: pointer; margin-top: 1em; }}
</style></head>
<body>
{body}
</body></html>
"""
