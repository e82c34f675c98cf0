"""report.html: the sweep's report as one self-contained page (docs/report.md).

The figures are embedded as base64 data URIs (the same PNGs are written beside the page), and the
page holds no script and no external reference, so it opens from the directory, offline, or attached
to an email. Every section has a stable id (SECTIONS) that the browser test checks.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from orchestrator.state import SweepState
from orchestrator.trial import TrialStatus

# What each Recommendation.source means, as the page's summary line says it.
SOURCE_WORDS = {
    "model": "the model's optimum",
    "in-sample": "an observed run, the one the model predicts best (in-sample)",
    "observed": "the best observed run",
}

SECTIONS = ("best-vs-trials", "heatmap", "recommendation", "target", "loo", "ladder", "warnings")

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .6em 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; } .note { color: #666; } img { max-width: 100%; }
.warn { background: #fff3cd; border-left: 4px solid #e0a800; padding: .4em .8em; margin: .4em 0; }
.ok { color: #2e7d32; } .bad { color: #c62828; font-weight: bold; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _num(v: Any, std: Any = None) -> str:
    if v is None or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "&ndash;"
    return f"{v:.4f}" + (f" &plusmn; {std:.4f}" if isinstance(std, (int, float)) and std > 0 else "")


def _mixture_table(rows: list[dict[str, Any]], domains: tuple[str, ...], why_not: str | None) -> str:
    loss_domains = list(dict.fromkeys(d for r in rows for d in (r["predicted"] or r["observed"] or {})))
    head = "".join(f"<th>w {_e(d)}</th>" for d in domains) + "".join(f"<th>loss {_e(d)}</th>" for d in loss_domains)
    body = []
    for r in rows:
        weights = "".join(f"<td>{r['mixture'][d]:.3f}</td>" for d in domains)
        pred = r["predicted"] or {}
        cells = []
        for d in loss_domains:
            text = _num(pred.get(d), (r["std"] or {}).get(d)) if d in pred else "&ndash;"
            if r["observed"] and d in r["observed"]:
                text += f'<br><span class="note">observed {r["observed"][d]:.4f}</span>'
            cells.append(f"<td>{text}</td>")
        obj = _num(r["objective"], r["objective_std"]) if r["objective"] is not None else "&ndash;"
        if r["observed_objective"] is not None:
            obj += f'<br><span class="note">observed {r["observed_objective"]:.4f} ({_e(r["observed_trial"])})</span>'
        body.append(f"<tr><td>{_e(r['name'])}</td>{weights}{''.join(cells)}<td>{obj}</td></tr>")
    note = f'<p class="note">{_e(why_not)}</p>' if why_not else \
        '<p class="note">Predicted: the surrogate\'s mean &plusmn; 1 std (nats/token), fitted to every completed trial.</p>'
    return f"{note}<table><tr><th>mixture</th>{head}<th>objective</th></tr>{''.join(body)}</table>"


def _epochs(e: Any, limit: Any) -> str:
    if e is None:
        return '<span class="bad">no tokens</span>'
    text = f"{e:.2f}"
    return f'<span class="bad">{text}</span>' if isinstance(limit, (int, float)) and e > limit + 1e-6 else text


def _sentence(text: str) -> str:
    return f"{text[:1].upper()}{text[1:]}." if text else ""


def _target_section(target: dict[str, Any] | None, domains: tuple[str, ...]) -> str:
    """The feasible recommendation beside the unconstrained optimum: per domain weight, epochs at the
    target run and the cap; the predicted objective of each; one sentence on what the caps cost."""
    if target is None:
        return ('<p class="note">No target run. Add <code>target: {tokens: N, available_tokens: {domain: N, ...}}</code> to the spec '
                "to cap each domain at data.max_epochs passes over its data at the production run (docs/spec.md).</p>")
    feasible, free = target["feasible"], target.get("unconstrained")
    limit = target.get("max_epochs")
    head = ("<tr><th>domain</th><th>available tokens</th><th>cap</th><th>feasible weight</th><th>epochs</th>"
            + ("<th>unconstrained weight</th><th>epochs</th>" if free else "") + "</tr>")
    body = []
    for d in domains:
        avail = (target.get("available_tokens") or {}).get(d)
        cap = (target.get("caps") or {}).get(d, 1.0)
        cells = [f"<td>{_e(d)}</td>", f"<td>{avail:.3g}</td>" if isinstance(avail, (int, float)) else "<td>&ndash;</td>",
                 f"<td>{cap:.3f}</td>", f"<td>{feasible['mixture'][d]:.3f}</td>",
                 f"<td>{_epochs(feasible['epochs'].get(d), limit)}</td>"]
        if free:
            over = d in (target.get("over_cap") or [])
            w = f"{free['mixture'][d]:.3f}"
            cells += [f'<td>{f"<b>{w}</b>" if over else w}</td>', f"<td>{_epochs(free['epochs'].get(d), limit)}</td>"]
        body.append("<tr>" + "".join(cells) + "</tr>")
    objective = (f"<tr><td>predicted objective</td><td></td><td></td><td>{_num(feasible.get('objective'))}</td><td></td>"
                 + (f"<td>{_num(free.get('objective'))}</td><td></td>" if free else "") + "</tr>")
    how = (f"Objectives: {'both predicted by the strategy&#x27;s model (its mean)' if free.get('predicted_by') == 'model' else 'observed'}; "
           f"unconstrained: {_e(free.get('source', ''))}.") if free else ""
    limit_text = f"data.max_epochs={limit:g}" if isinstance(limit, (int, float)) else "data.max_epochs"
    return (f'<p class="summary" id="target-summary">Target run: {target["tokens"]:.3g} tokens; each domain capped at '
            f"{_e(limit_text)} passes over its available tokens. {_e(_sentence(target.get('summary', '')))}</p>"
            f'<table>{head}{"".join(body)}{objective}</table>'
            f'<p class="note">Epochs: weight &times; target tokens / available tokens; above {_e(limit_text)} in red. '
            f"Caps: the smaller of the proxy's and the target run's. {how}</p>")


def _ladder_section(ladder: dict[str, Any] | None, out: Path) -> str:
    from orchestrator.ladder import rung_verdict

    if ladder is None:
        return ('<p class="note">No scale ladder ran. Add <code>ladder: {presets: [...], top_k: 3}</code> to the spec, '
                'or run <code>mixsweep ladder DIR --preset P --top K</code> on the finished sweep.</p>')
    parts = []
    for rung in ladder["rungs"]:
        rho, _ = rung_verdict(rung)  # with the bootstrap's interval and probability (ladder.py)
        rho = _e(rho)
        held = rung["winner_held"]
        verdict = {True: '<span class="ok">yes</span>', False: '<span class="bad">no</span>', None: "n/a"}[held]
        if rung.get("winner_held_p") is not None:
            verdict += f" (probability {rung['winner_held_p']:.2f} over bootstrap resamples of the mixtures"
            verdict += f" and their replicates: {rung['replicated']} replicated)" if rung.get("replicated") else ")"
        parts.append(f"<h3>{_e(ladder['base_preset'])} &rarr; {_e(rung['preset'])}</h3>"
                     f'<p class="summary" data-preset="{_e(rung["preset"])}">Spearman rank correlation between scales: '
                     f"<b>{rho}</b> over {rung['pairs']} mixtures. Winner held: <b>{verdict}</b> "
                     f"(winner at {_e(ladder['base_preset'])}: {_e(rung['winner_base'])}; at {_e(rung['preset'])}: {_e(rung['winner'])}).</p>")
        rows = "".join(f"<tr><td>{_e(r['role'])}</td><td>{_e(r['trial'])}</td><td>{_e(r['status'])}</td>"
                       f"<td>{_num(r['base_objective'])}</td><td>{_num(r['objective'])}</td></tr>" for r in rung["rows"])
        parts.append(f"<table><tr><th>mixture</th><th>trial</th><th>status</th><th>objective at {_e(ladder['base_preset'])}</th>"
                     f"<th>objective at {_e(rung['preset'])}</th></tr>{rows}</table>")
        scaled = rung.get("scale_recommended")
        if scaled and scaled.get("mixture"):
            mix = ", ".join(f"{_e(d)} {w:.3f}" for d, w in scaled["mixture"].items())
            parts.append(f'<p class="scale-model">Scale-aware model (model size as a GP input, {scaled["runs"]["sweep"]} sweep + '
                         f'{scaled["runs"]["ladder"]} ladder runs) recommends at {_e(rung["preset"])}: {mix}; predicted objective '
                         f'{scaled["objective"]:.4f} &plusmn; {scaled["objective_std"]:.4f}. Few larger-scale runs: read it as a '
                         "direction to test, not a measurement.</p>")
        elif scaled:
            parts.append(f'<p class="note">No scale-aware recommendation at {_e(rung["preset"])}: {_e(scaled.get("note", ""))}</p>')
    if (out / "ladder.png").exists():
        parts.append(_img(out / "ladder.png", "objective at each scale"))
    return "".join(parts)


def render_page(state: SweepState, rec: dict[str, Any] | None, rows: list[dict[str, Any]], loo: dict[str, Any] | None,
                ladder: dict[str, Any] | None, warnings: list[str], why_not: str | None, out: Path,
                target: dict[str, Any] | None = None) -> str:
    """The page's HTML; `out` is the report directory holding the PNGs to embed."""
    done = len(state.completed)
    failed = len(state.by_status(TrialStatus.FAILED))
    source = f"{SOURCE_WORDS.get(rec['source'], rec['source'])}, from {rec['trials_used']} trials" if rec else "none"
    if loo is not None:
        fit = ", ".join(f"{_e(d)} {loo['rmse'][d]:.4f}" for d in loo["domains"])
        own = (" This GP is fitted for the report to the completed trials; it is not the sweep strategy's own model."
               if loo.get("fitted_for_report") else "")
        loo_html = (f'<p class="note">Each trial predicted by the {_e(loo["surrogate"])} surrogate fitted without it '
                    f"({loo['n']} trials). RMSE (nats/token): {fit}.{_e(own)}</p>" + _img(out / "loo.png", "leave-one-out"))
    else:
        loo_html = f'<p class="note">No leave-one-out check: {_e(why_not or "too few completed trials to leave one out")}.</p>'
    warn_html = "".join(f'<div class="warn">{_e(w)}</div>' for w in warnings) or '<p class="ok">No warnings.</p>'
    notes = "".join(f"<li>{_e(n)}</li>" for n in (rec or {}).get("notes", []))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mixsweep report: {_e(state.name)}</title><style>{_CSS}</style></head>
<body>
<h1>mixsweep report: {_e(state.name)}</h1>
<p>{done} completed, {failed} failed of a budget of {state.budget}; objective: {_e(state.objective_description)}{_e("".join(f" ({n})" for n in state.objective_notes()))};
recommendation: {_e(source)}.</p>
<section id="warnings"><h2>Warnings</h2>{warn_html}</section>
<section id="best-vs-trials"><h2>Best objective vs trials</h2>
<p class="note">Each completed trial's objective in the order proposed, the best so far, and the baselines
(solid: a trial ran it; dashed: predicted by the surrogate). Red bars: failed trials.</p>
{_img(out / "objective.png", "best objective vs trials")}</section>
<section id="recommendation"><h2>Recommended mixture</h2>{_mixture_table(rows, state.domains, why_not)}
{f"<ul>{notes}</ul>" if notes else ""}</section>
<section id="target"><h2>Target run: feasible and unconstrained optimum</h2>{_target_section(target, state.domains)}</section>
<section id="heatmap"><h2>Per-domain losses of every trial</h2>{_img(out / "heatmap.png", "per-domain loss heatmap")}</section>
<section id="loo"><h2>Surrogate: leave-one-out predicted vs observed</h2>{loo_html}</section>
<section id="ladder"><h2>Scale ladder</h2>{_ladder_section(ladder, out)}</section>
</body></html>
"""
