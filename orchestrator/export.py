"""`mixsweep export DIR --format F`: the recommended mixture in the forms a production run reads.

Formats (each parses back to the same weights; tests/unit/test_export.py checks every one):
- `json`, `yaml`: {"mixture": {domain: weight}, "domains": [...], objective, source, sweep};
- `megatron`: one line of `weight path` pairs, as Megatron-LM's `--data-path` (or a `--data-args-path`
  file) takes them; paths from the spec's domains where each is one file, else from `--paths`;
- `hf`: a short Python file calling `datasets.interleave_datasets(..., probabilities=[...])` with the
  domain order stated (domains of weight 0 are left out: `all_exhausted` would wait on them forever);
- `runs`: the runs table of every completed trial (DESIGN.md section 5), CSV or Parquet by extension:
  the sweep's trials, then the scale ladder's, each with its scale (`scale.params`: the non-embedding
  parameters of the preset it trained at; `scale.tokens`: its training tokens, for the proxy trainer,
  the only one whose token count the spec fixes) and its `preset`, so `mixsweep recommend` can fit
  the sizes together.

The recommendation is the journal's `recommended` event, or the best completed trial of a sweep that
stopped before recommending (as `mixsweep report` does). Bad input raises `ExportError` (one line).

Names come from the journal, which anyone can edit: `replay` checks them against the frozen spec, and
every format writes them through a serializer (json.dumps, yaml.safe_dump, repr, pandas' CSV quoting),
never pasted into text, so a name can never become code or a second line.

Every export records the journal seq it was made from (`journal_seq`); exports in `report/` are listed
in `report/exports.json` and re-made by `refresh_exports` (after `resume`, and by `mixsweep report`)
when the journal has moved on, so a mixture exported before a resume never outlives it unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import yaml

from orchestrator.journal import last_seq, load
from orchestrator.runs import runs_frame, write_frame
from orchestrator.state import SweepState
from orchestrator.sweepdir import JOURNAL, REPORT, write_json_atomic

FORMATS = ("json", "yaml", "megatron", "hf", "runs")
DEFAULT_FILES = {"json": "mixture.json", "yaml": "mixture.yaml", "megatron": "megatron_blend.txt",
                 "hf": "interleave.py", "runs": "runs.csv"}
_GLOB = set("*?[")
MANIFEST = "exports.json"  # report/exports.json: file -> {format, paths, journal_seq}


class ExportError(ValueError):
    """An export problem, as one line: what is wrong and the fix."""


def recommendation(state: SweepState) -> dict[str, Any]:
    """The sweep's recommendation (journal), else its best completed trial; ExportError if neither."""
    if state.recommendation is not None:
        return dict(state.recommendation)
    best = state.best()
    if best is None:
        raise ExportError("the sweep has no completed trial, so no mixture to export; run or resume it first")
    return {"mixture": best.mixture, "predicted_losses": best.losses, "objective": best.objective,
            "source": "observed", "trials_used": len(state.completed), "notes": ["sweep not finished: best observed trial"]}


def parse_paths(text: str | None) -> dict[str, str]:
    """`--paths domain=PATH,...` as {domain: path}."""
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, path = part.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ExportError(f"--paths: {part!r} is not domain=PATH; e.g. --paths web=/data/web_text_document,code=/data/code")
        out[name.strip()] = path.strip()
    return out


def spec_paths(spec: Any) -> dict[str, str]:
    """Each training domain's path in the spec, where it names one file (not a glob, list or demo)."""
    out = {}
    for name, d in spec.domains.items():
        if isinstance(d.path, str) and not (_GLOB & set(d.path)) and not Path(d.path).expanduser().is_dir():
            out[name] = d.path
    return out


def render_json(rec: Mapping[str, Any], sweep: str, journal_seq: int | None = None) -> str:
    return json.dumps(_document(rec, sweep, journal_seq), indent=2) + "\n"


def render_yaml(rec: Mapping[str, Any], sweep: str, journal_seq: int | None = None) -> str:
    return yaml.safe_dump(_document(rec, sweep, journal_seq), sort_keys=False)


def render_megatron(mixture: Mapping[str, float], paths: Mapping[str, str]) -> str:
    """`w1 path1 w2 path2 ...` in the mixture's domain order; ExportError naming a domain without a path."""
    missing = [d for d in mixture if d not in paths]
    if missing:
        raise ExportError(f"megatron: no data path for domain(s) {missing} (the spec names no single file for them); "
                          f"pass --paths {missing[0]}=PATH[,...] (Megatron's indexed-dataset prefix)")
    for d, p in paths.items():
        if any(c.isspace() for c in p):
            raise ExportError(f"megatron: path of domain {d!r} contains whitespace, which a blend list cannot hold; rename it")
    return " ".join(f"{float(w)!r} {paths[d]}" for d, w in mixture.items()) + "\n"


def parse_megatron(text: str) -> list[tuple[float, str]]:
    """(weight, path) pairs of a blend list."""
    parts = text.split()
    if len(parts) % 2:
        raise ValueError("a blend list holds weight-path pairs")
    return [(float(parts[i]), parts[i + 1]) for i in range(0, len(parts), 2)]


def render_hf(mixture: Mapping[str, float], sweep: str, stopping_strategy: str = "all_exhausted",
              journal_seq: int | None = None) -> str:
    """A Python module for datasets.interleave_datasets. Every name is a Python literal made by repr()
    in an assignment; the docstring holds no name, so no name can end it and become code."""
    domains = [d for d, w in mixture.items() if w > 0]
    dropped = [d for d, w in mixture.items() if w <= 0]
    return f'''"""Recommended data mixture of a mixsweep sweep (SWEEP), for datasets.interleave_datasets.

Domain order: DOMAINS. Domains of weight 0 are left out (LEFT_OUT): `all_exhausted` would wait on them.
Pass one Dataset (or IterableDataset) per domain, as {{domain: dataset}} or a list in DOMAINS order.
"""

from datasets import interleave_datasets

SWEEP = {str(sweep)!r}
JOURNAL_SEQ = {journal_seq!r}
DOMAINS = {[str(d) for d in domains]!r}
LEFT_OUT = {[str(d) for d in dropped]!r}
PROBABILITIES = {[float(mixture[d]) for d in domains]!r}


def interleave(datasets, seed=0, stopping_strategy={str(stopping_strategy)!r}):
    if isinstance(datasets, dict):
        datasets = [datasets[d] for d in DOMAINS]
    return interleave_datasets(datasets, probabilities=PROBABILITIES, seed=seed, stopping_strategy=stopping_strategy)
'''


def runs_table(state: SweepState, spec: Any = None) -> Any:
    """Every completed trial that measures its mixture (not DoReMi's online proxy run) as a runs-table
    DataFrame, with trial id, objective and wall time. With the frozen `spec`, also the ladder's completed
    trials and every row's scale and preset (the module docstring); without it, the sweep's trials alone."""
    from orchestrator.mixture import Mixture
    from orchestrator.trial import TrialStatus

    done = [t for t in state.in_order() if t.status == TrialStatus.COMPLETED and t.losses is not None and t.measures_mixture]
    presets, fidelities = [None] * len(done), [t.fidelity for t in done]
    if spec is not None:
        known = {f.name for f in spec.fidelities or []}
        bad = sorted({f for f in fidelities if f is not None and f not in known})
        if bad:  # the journal is read as hostile input: a fidelity becomes a scale only if the spec has it
            raise ExportError(f"the journal names fidelities {bad} that the frozen spec's `fidelities` lacks; restore the spec the sweep ran with")
        ladder = sorted((t for t in state.ladder.values() if t.status == TrialStatus.COMPLETED and t.losses is not None),
                        key=lambda t: t.proposed_seq)
        presets = [(spec.fidelity(f).preset if f is not None else None) or spec.proxy.preset for f in fidelities]
        done, presets, fidelities = done + ladder, presets + [t.preset for t in ladder], fidelities + [None] * len(ladder)
    if not done:
        raise ExportError("the sweep has no completed trial; a runs table needs at least one")
    params, tokens = scale_columns(spec, presets, fidelities) if spec is not None else (None, None)
    frame = runs_frame([Mixture.from_dict(t.mixture, state.domains or tuple(t.mixture)) for t in done],
                       [t.losses for t in done], params, tokens)
    frame.insert(0, "trial", [t.id for t in done])
    if spec is not None:
        frame.insert(1, "preset", presets)
        if spec.fidelities:
            frame.insert(2, "fidelity", fidelities)
    frame["objective"] = [t.objective for t in done]
    frame["wall_s"] = [t.wall_s for t in done]
    return frame


def scale_columns(spec: Any, presets: list[str], fidelities: list[str | None] | None = None) -> tuple[list[float], list[float] | None]:
    """`scale.params` (the preset's non-embedding parameters: the size a trial stands for, whatever its
    trainer) and `scale.tokens` (the proxy trainer's training tokens at that preset, or at the row's
    fidelity of a multi-fidelity sweep; None for other trainers, whose token count the spec does not
    fix) of runs trained at `presets`."""
    from workers.presets import PRESETS

    fidelities = fidelities or [None] * len(presets)
    params = [float(PRESETS[p].non_embedding_params()) for p in presets]
    tokens = [float(spec.fidelity_tokens(f) if f is not None else spec.proxy.training_tokens(p)) for p, f in zip(presets, fidelities)] \
        if spec.trainer.kind == "proxy" else None
    return params, tokens


def export(sweep_dir: str | Path, fmt: str, out: str | Path | None = None, paths: str | None = None,
           spec: Any = None) -> Path:
    """Write `fmt` for the sweep in local directory `sweep_dir`; returns the file written (default:
    report/<DEFAULT_FILES[fmt]> in the sweep directory). `spec` (the frozen spec) gives megatron paths."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    d = Path(sweep_dir)
    target = Path(out) if out else d / REPORT / DEFAULT_FILES[fmt]
    resolved = None
    if fmt == "megatron":
        resolved = {**(spec_paths(spec) if spec is not None else {}), **parse_paths(paths)}
    return _write(d, fmt, target, resolved)


def _write(d: Path, fmt: str, target: Path, paths: dict[str, str] | None) -> Path:
    """Render `fmt` from the journal of sweep dir `d` into `target` (temp file, then rename) and, for a
    target inside report/, record it in the manifest with the journal seq it was made from."""
    events, state = load(d / JOURNAL)
    seq = last_seq(events)
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "runs":
        write_frame(runs_table(state, _frozen_spec(d)), target)
    else:
        _replace(target, _render(fmt, recommendation(state), state.name, seq, paths))
    _record_export(d, target, fmt, paths, seq)
    return target


def _frozen_spec(d: Path) -> Any:
    """The sweep's frozen spec (the runs' scales come from it); ExportError, one line, when unreadable."""
    from orchestrator.spec import SpecError, load_frozen_spec

    try:
        return load_frozen_spec(d)
    except SpecError as err:
        raise ExportError(f"runs: {str(err).splitlines()[0]}") from None


def _render(fmt: str, rec: dict[str, Any], sweep: str, seq: int, paths: dict[str, str] | None) -> str:
    if fmt == "json":
        return render_json(rec, sweep, seq)
    if fmt == "yaml":
        return render_yaml(rec, sweep, seq)
    if fmt == "hf":
        return render_hf(rec["mixture"], sweep, journal_seq=seq)
    unknown = sorted(set(paths or {}) - set(rec["mixture"]))
    if unknown:
        raise ExportError(f"--paths names unknown domain(s) {unknown}; use one of {list(rec['mixture'])}")
    return render_megatron(rec["mixture"], paths or {})


def _replace(target: Path, text: str) -> None:
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)


def _record_export(d: Path, target: Path, fmt: str, paths: dict[str, str] | None, seq: int) -> None:
    """List an export written inside report/ (only there: refreshing never writes outside the sweep)."""
    report = (d / REPORT).resolve()
    if target.resolve().parent != report:
        return
    manifest = _manifest(d)
    manifest[target.name] = {"format": fmt, "paths": paths, "journal_seq": seq}
    write_json_atomic(report / MANIFEST, manifest)


def _manifest(d: Path) -> dict[str, Any]:
    try:
        data = json.loads((d / REPORT / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def refresh_exports(sweep_dir: str | Path, log=print) -> list[str]:
    """Re-make every export in report/ whose journal seq is behind the journal's (after a resume); one
    that can no longer be made is removed (and said so). Returns the files re-made or removed."""
    d = Path(sweep_dir)
    manifest = _manifest(d)
    if not manifest:
        return []
    seq = last_seq(load(d / JOURNAL)[0])
    touched = []
    for name, entry in manifest.items():
        if not isinstance(entry, dict) or entry.get("journal_seq") == seq or entry.get("format") not in FORMATS:
            continue
        target = d / REPORT / Path(str(name)).name  # a manifest entry names a file in report/, nothing else
        try:
            _write(d, entry["format"], target, entry.get("paths"))
        except ExportError as err:
            target.unlink(missing_ok=True)
            log(f"export: removed {target} made before the journal moved on, and it cannot be made again: {err}")
            _forget(d, target.name)
        touched.append(str(target))
    return touched


def _forget(d: Path, name: str) -> None:
    manifest = _manifest(d)
    manifest.pop(name, None)
    write_json_atomic(d / REPORT / MANIFEST, manifest)


def _document(rec: Mapping[str, Any], sweep: str, journal_seq: int | None = None) -> dict[str, Any]:
    mixture = {str(d): float(w) for d, w in rec["mixture"].items()}
    return {"sweep": str(sweep), "journal_seq": journal_seq, "domains": list(mixture), "mixture": mixture,
            "objective": rec.get("objective"), "source": rec.get("source"), "trials_used": rec.get("trials_used"),
            "predicted_losses": rec.get("predicted_losses") or {}, "notes": list(rec.get("notes") or [])}
