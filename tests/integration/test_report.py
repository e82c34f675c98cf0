"""`mixsweep report`: the HTML page rendered by headless Chromium has every section and no broken image;
its warnings fire on constructed cases."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import urllib.request
from html import escape
from pathlib import Path

import pytest

from conftest import run_cli
from orchestrator.controller import Controller
from orchestrator.journal import Journal
from orchestrator.report import FAR_FROM_OBSERVED_TV, write_report
from orchestrator.report_page import SECTIONS
from orchestrator.spec import parse_spec
from test_dashboard import CHROMIUM, DevTools, start_chromium

# What the page looks like to a reader: which sections exist, and each image's decoded size.
PAGE_FACTS = """JSON.stringify({
  ready: document.readyState,
  sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
  images: Array.from(document.images).map(i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
                                                  inline: i.src.startsWith('data:image/png;base64,')})),
  links: Array.from(document.querySelectorAll('[href],script,link')).length,
  text: document.body.innerText})"""


async def _page_facts(devtools_http: str, url: str, timeout_s: float = 30) -> dict:
    import aiohttp

    with urllib.request.urlopen(devtools_http + "/json/list", timeout=10) as r:
        page = next(t for t in json.load(r) if t["type"] == "page")
    async with aiohttp.ClientSession() as http, http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
        cdp = DevTools(ws)
        await cdp.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout_s
        while True:
            out = await cdp.call("Runtime.evaluate", expression=PAGE_FACTS, returnByValue=True)
            # While the page loads, the expression can throw (no body yet): try again.
            facts = json.loads(out["result"]["value"]) if "value" in out["result"] else {"ready": "loading"}
            if facts["ready"] == "complete" and facts["sections"]:
                return facts
            assert time.monotonic() < deadline, f"the page did not load in {timeout_s} s: {out}"
            await asyncio.sleep(0.2)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)")
def test_report_page_has_every_section_and_no_broken_image(ray_session, tmp_path):
    d = tmp_path / "sweep"
    spec = parse_spec({
        "name": "report", "domains": {n: {} for n in "abc"},
        "trainer": {"kind": "synthetic", "duration_s": 0.1, "progress_events": 2, "noise": 0.005,
                    "optimum_at_scale": {"debug": {"a": 0.6, "b": 0.3, "c": 0.1}, "1m": {"a": 0.1, "b": 0.3, "c": 0.6}}},
        "strategy": {"kind": "gp", "options": {"initial_trials": 4}}, "budget": {"trials": 6, "concurrency": 3},
        "ladder": {"presets": ["debug", "1m"], "top_k": 2, "baselines": ["uniform"]},
    })
    Controller(spec, d, log=lambda m: None).run()
    out = run_cli(["report", str(d)])
    assert out.returncode == 0, out.stderr[-3000:]
    page = d / "report" / "report.html"
    assert str(page) in out.stdout.replace("\n", "")

    with tempfile.TemporaryDirectory(prefix="mixsweep-chromium-", ignore_cleanup_errors=True) as profile:
        browser, devtools = start_chromium(Path(profile))
        try:
            facts = asyncio.run(_page_facts(devtools, page.resolve().as_uri()))
        finally:
            browser.terminate()
            browser.wait(timeout=30)  # it writes its profile while it exits
    assert sorted(facts["sections"]) == sorted(SECTIONS)
    # best-vs-trials, heatmap, leave-one-out and ladder figures, all decoded, all inside the page.
    assert len(facts["images"]) == 4
    assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 and i["inline"] for i in facts["images"])
    assert facts["links"] == 0  # no script, stylesheet or link to fetch: the page stands alone
    text = facts["text"]
    assert "recommended" in text and "uniform" in text and "±" in text  # predicted losses with their std
    assert "Winner held: no" in text and "Spearman rank correlation between scales" in text
    assert "predicted by the gp surrogate fitted without it (6 trials)" in text
    assert json.loads((d / "report" / "recommendation.json").read_text())["source"] in ("model", "in-sample")


def _journal(d: Path, trials: list[dict], recommended: dict, caps: dict | None = None) -> None:
    """A finished sweep's journal, written event by event as the controller would."""
    with Journal(d / "journal.jsonl") as j:
        j.append("sweep_started", name="built", domains=["a", "b", "c"], budget=len(trials), concurrency=1,
                 objective="mean of per-domain losses", **({"caps": caps} if caps else {}))
        for i, w in enumerate(trials):
            tid = f"t{i:012x}"
            losses = {k: 2.0 + v for k, v in w.items()}
            j.append("trial_proposed", trial=tid, mixture=w)
            j.append("trial_started", trial=tid, attempt=1)
            j.append("trial_completed", trial=tid, losses=losses, objective=sum(losses.values()) / 3)
        j.append("recommended", mixture=recommended, predicted_losses={"a": 2.1, "b": 2.1, "c": 2.1},
                 predicted_std={"a": 0.3, "b": 0.3, "c": 0.3}, objective=2.1, objective_std=0.2, source="model",
                 trials_used=len(trials), notes=[])
        j.append("sweep_finished")


CORNERS = [{"a": 0.9, "b": 0.05, "c": 0.05}, {"a": 0.05, "b": 0.9, "c": 0.05}, {"a": 0.05, "b": 0.05, "c": 0.9}]


def test_far_from_observed_warning_fires_only_when_far(tmp_path):
    far, near = tmp_path / "far", tmp_path / "near"
    _journal(far, CORNERS, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})  # 0.57 of the weight from every corner
    _journal(near, CORNERS, {"a": 0.85, "b": 0.1, "c": 0.05})
    write_report(far)
    write_report(near)
    far_html, near_html = ((p / "report" / "report.html").read_text() for p in (far, near))
    assert "far from every observed run: the nearest, t00" in far_html and "differs by 0.57 of the weight" in far_html
    assert f"flagged above {FAR_FROM_OBSERVED_TV}" in far_html
    assert "far from every observed run" not in near_html and "No warnings." in near_html
    # No spec.yaml to rebuild a strategy from: observed values only, and said so.
    assert "observed values only" in near_html


def test_cap_warning_fires_when_the_recommendation_sits_on_a_cap(tmp_path):
    _journal(tmp_path, CORNERS, {"a": 0.85, "b": 0.1, "c": 0.05}, caps={"a": 0.85, "b": 1.0, "c": 1.0})
    write_report(tmp_path)
    html = (tmp_path / "report" / "report.html").read_text()
    assert "sits on the data cap of a" in html and "data cap of b" not in html


def _uniform_row(html: str) -> str:
    start = html.index("<tr><td>uniform</td>")
    return html[start:html.index("</tr>", start)]


@pytest.mark.parametrize("kind,own_model", [("sobol", False), ("bayesopt", True)])
def test_every_strategy_reports_predicted_baselines_and_a_leave_one_out(ray_session, tmp_path, kind, own_model):
    d = tmp_path / "sweep"
    spec = parse_spec({
        "name": kind, "domains": {n: {} for n in "abc"},
        "trainer": {"kind": "synthetic", "duration_s": 0.05, "progress_events": 1, "noise": 0.005},
        "strategy": {"kind": kind, "options": {"initial_trials": 3} if kind == "bayesopt" else {}},
        "budget": {"trials": 7, "concurrency": 4},
    })
    Controller(spec, d, log=lambda m: None).run()
    paths = write_report(d)
    html = paths["html"].read_text()
    row = _uniform_row(html)
    # the uniform baseline has a predicted objective with its std (it used to be "–" for both strategies)
    assert row.count("&plusmn;") >= 4, row
    assert "loo" in paths and "No leave-one-out check" not in html
    assert "predicted by the gp surrogate fitted without it (7 trials)" in html
    fitted_for_report = "Predicted: a GP surrogate fitted for this report to the 7 completed trials"
    assert (fitted_for_report in html) is not own_model  # sobol: labelled as the report's GP; bayesopt: Ax's own
    assert "This GP is fitted for the report" in html  # bayesopt's leave-one-out too (Ax is not refitted per trial)
    rec = json.loads((d / "report" / "recommendation.json").read_text())
    words = {"model": "the model's optimum", "in-sample": "an observed run, the one the model predicts best",
             "observed": "the best observed run"}
    assert escape(words[rec["source"]]) in html
