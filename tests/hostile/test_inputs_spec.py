"""Hostile sweep specs: every one is refused by `load_spec` (so by validate, run and resume) with ONE line
that names the field or the line, before anything runs; the good ones that look odd still load.

No Ray, no data: the specs use the synthetic trainer. Nothing is written outside the test's tmp dir.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.spec import SpecError, load_spec

HEAD = "name: hostile\ntrainer: {kind: synthetic}\n"
THREE = "domains: {books: {}, code: {}, math: {}}\n"
FOUR = "domains: {books: {}, code: {}, math: {}, legal: {}}\n"


pytestmark = pytest.mark.usefixtures("confined")  # tests/conftest.py


def _load(tmp_path: Path, text: str | bytes):
    path = tmp_path / "spec.yaml"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return load_spec(path)


def _one_line(err: SpecError) -> str:
    msg = str(err)
    assert msg and "\n" not in msg and "\r" not in msg and "Traceback" not in msg, repr(msg)
    return msg


HOSTILE = [  # (id, spec text, substrings of the one-line error)
    # duplicated keys, at several depths: YAML would keep the last one without a word
    ("dup-top-budget", HEAD + THREE + "budget: {trials: 3}\nbudget: {trials: 300}\n", ["'budget'", "twice", "line 4", "line 5"]),
    ("dup-domain", HEAD + "domains:\n  books: {}\n  code: {}\n  books: {demo: books}\n", ["'books'", "twice", "line 4", "line 6"]),
    ("dup-nested-field", HEAD + THREE + "budget:\n  trials: 4\n  concurrency: 1\n  trials: 40\n", ["'trials'", "line 5", "line 7"]),
    ("dup-flow-mapping", HEAD + THREE + "budget: {trials: 4, trials: 5}\n", ["'trials'", "twice"]),
    ("dup-strategy-option", HEAD + THREE + "strategy:\n  kind: gp\n  options:\n    min_weight: 0.1\n    min_weight: 0.2\n",
     ["'min_weight'", "twice"]),
    ("dup-trainer", HEAD + THREE + "trainer: {kind: synthetic, noise: 0.1}\n", ["'trainer'", "twice"]),
    ("dup-deep-optimum", HEAD.replace("{kind: synthetic}", "{kind: synthetic, optimum: {books: 0.5, books: 0.2, code: 0.3}}") + THREE,
     ["'books'", "twice"]),
    # booleans where numbers are expected
    ("bool-trials", HEAD + THREE + "budget: {trials: true}\n", ["`budget.trials`", "boolean"]),
    ("bool-concurrency", HEAD + THREE + "budget: {concurrency: yes}\n", ["`budget.concurrency`", "boolean"]),
    ("bool-seed", HEAD + THREE + "seed: false\n", ["`seed`", "boolean"]),
    ("bool-precision", HEAD + THREE + "budget: {weight_precision: true}\n", ["`budget.weight_precision`", "boolean"]),
    ("bool-tokens", HEAD + THREE + "proxy: {tokens_per_trial: true}\n", ["`proxy.tokens_per_trial`", "boolean"]),
    ("bool-gpus", HEAD + THREE + "resources: {gpus: true}\n", ["`resources.gpus`", "boolean"]),
    ("bool-noise", HEAD.replace("{kind: synthetic}", "{kind: synthetic, noise: true}") + THREE, ["`trainer.noise`", "boolean"]),
    ("bool-strategy-option", HEAD + THREE + "strategy: {kind: gp, options: {initial_trials: true}}\n",
     ["`strategy.options.initial_trials`", "boolean"]),
    ("bool-min-weight", HEAD + THREE + "strategy: {kind: sobol, options: {min_weight: true}}\n", ["`strategy.options.min_weight`", "boolean"]),
    ("bool-in-weights", HEAD + THREE + "objective: {kind: weighted, weights: {books: true, code: 1}}\n", ["`objective.weights`", "boolean"]),
    # names that pass a `match(...$)` but break files, Ax and tables later
    ("name-newline", HEAD + 'domains: {"books\\n": {}, code: {}}\n', ["`domains`", "'books\\n'"]),
    ("name-cr", HEAD + 'domains: {"books\\r": {}, code: {}}\n', ["`domains`", "a letter then"]),
    ("name-space", HEAD + 'domains: {"books ": {}, code: {}}\n', ["`domains`", "a letter then"]),
    ("name-unicode", HEAD + "domains: {bücher: {}, code: {}}\n", ["`domains`", "'bücher'"]),
    ("name-path", HEAD + 'domains: {"../etc": {}, code: {}}\n', ["`domains`", "'../etc'"]),
    ("name-slash", HEAD + 'domains: {"a/b": {}, code: {}}\n', ["`domains`", "'a/b'"]),
    ("name-empty", HEAD + 'domains: {"": {}, code: {}}\n', ["`domains`", "a letter then"]),
    ("name-number", HEAD + "domains: {1: {}, code: {}}\n", ["`domains"]),
    ("eval-name-newline", HEAD.replace("synthetic", "proxy") + 'domains: {books: {demo: books}, code: {demo: code}}\n'
     'eval_domains: {"qa\\n": {demo: math}}\n', ["`eval_domains.qa\\n`", "a letter then"]),
    ("sweep-name-dotdot", THREE + "trainer: {kind: synthetic}\nname: ..\n", ["`name`"]),
    ("sweep-name-newline", THREE + 'trainer: {kind: synthetic}\nname: "x\\n"\n', ["`name`"]),
    # infeasible mixture spaces, per strategy
    ("gp-lower-sum", HEAD + THREE + "strategy: {kind: gp, options: {bounds: {books: [0.4, 1], code: [0.4, 1], math: [0.4, 1]}}}\n",
     ["`strategy.options.bounds`", "1.200 > 1"]),
    ("gp-upper-sum", HEAD + THREE + "strategy: {kind: gp, options: {bounds: {books: [0, 0.1], code: [0, 0.1], math: [0, 0.1]}}}\n",
     ["`strategy.options.bounds`", "0.300 < 1"]),
    ("gp-floor", HEAD + THREE + "strategy: {kind: gp, options: {min_weight: 0.4}}\n", ["`strategy.options.min_weight`", "at most 0.3333"]),
    ("sobol-floor", HEAD + FOUR + "strategy: {kind: sobol, options: {min_weight: 0.45}}\n", ["`strategy.options.min_weight`", "at most 0.2500"]),
    ("sobol-floor-3", HEAD + FOUR + "strategy: {kind: sobol, options: {min_weight: 0.3}}\n", ["`strategy.options.min_weight`", "1.200 > 1"]),
    ("regmix-floor", HEAD + FOUR + "strategy: {kind: regmix, options: {min_weight: 0.3}}\n", ["`strategy.options.min_weight`"]),
    ("mixing-law-bounds", HEAD + THREE + "strategy: {kind: mixing_law, options: {bounds: {books: [0.9, 1], code: [0.2, 1]}}}\n",
     ["`strategy.options.bounds`", "lower bounds"]),
    ("bimix-floor-vs-upper", HEAD + THREE + "strategy: {kind: bimix, options: {min_weight: 0.2, bounds: {books: [0, 0.1]}}}\n",
     ["`strategy.options.bounds.books`", "below the floor"]),
    ("lower-above-upper", HEAD + THREE + "strategy: {kind: gp, options: {bounds: {books: [0.5, 0.2]}}}\n",
     ["`strategy.options.bounds.books`", "lower <= upper"]),
    ("bounds-unknown-domain", HEAD + THREE + "strategy: {kind: gp, options: {bounds: {poetry: [0, 1]}}}\n",
     ["`strategy.options.bounds.poetry`", "unknown domain"]),
    # unknown keys and wrong shapes
    ("unknown-top", HEAD + THREE + "budjet: {trials: 3}\n", ["`budjet`", "unknown key"]),
    ("unknown-nested", HEAD + THREE + "budget: {trails: 3}\n", ["`budget.trails`", "unknown key"]),
    ("unknown-option", HEAD + THREE + "strategy: {kind: gp, options: {min_wieght: 0.1}}\n", ["`strategy.options.min_wieght`", "unknown key"]),
    ("list-document", "- books\n- code\n", ["YAML mapping"]),
    ("tab-indent", HEAD + "domains:\n\tbooks: {}\n", ["not valid YAML", "line"]),
    ("non-utf8", (HEAD + THREE).encode() + b"# \xff\xfe\n", ["not UTF-8"]),
    ("nan-budget", HEAD + THREE + "budget: {trial_timeout_s: .nan}\n", ["`budget.trial_timeout_s`", "finite"]),
    ("inf-noise", HEAD.replace("{kind: synthetic}", "{kind: synthetic, noise: .inf}") + THREE, ["`trainer.noise`", "finite"]),
    # the target run (orchestrator/target.py): caps need its tokens, and counts per known domain
    ("target-available-no-tokens", HEAD + THREE + "target: {available_tokens: {books: 100}}\n", ["`target.available_tokens`", "target.tokens"]),
    ("target-tokens-zero", HEAD + THREE + "target: {tokens: 0}\n", ["`target.tokens`", "greater than 0"]),
    ("target-available-negative", HEAD + THREE + "target: {tokens: 1e9, available_tokens: {books: -5}}\n",
     ["`target.available_tokens.books`", ">= 0"]),
    ("target-available-nan", HEAD + THREE + "target: {tokens: 1e9, available_tokens: {books: .nan}}\n",
     ["`target.available_tokens.books`", "finite"]),
    ("target-available-text", HEAD + THREE + "target: {tokens: 1e9, available_tokens: {books: lots}}\n",
     ["`target.available_tokens.books`", "number"]),
    ("target-available-unknown-domain", HEAD + THREE + "target: {tokens: 1e9, available_tokens: {poetry: 5}}\n",
     ["`target.available_tokens.poetry`", "unknown domain"]),
    ("target-available-list", HEAD + THREE + "target: {tokens: 1e9, available_tokens: [books]}\n", ["`target.available_tokens`", "dictionary"]),
    # multi-fidelity sweeps: a fidelity name becomes a trial option (never a path), costs are positive numbers
    ("fidelity-one", HEAD + THREE + "fidelities: [{name: small, preset: debug}]\n", ["`fidelities`", "at least 2"]),
    ("fidelity-name-path", HEAD + THREE + "fidelities: [{name: ../x, preset: debug}, {name: big, preset: 1m}]\n",
     ["`fidelities.0.name`", "letters, digits"]),
    ("fidelity-same-name", HEAD + THREE + "fidelities: [{name: a, preset: debug}, {name: a, preset: 1m}]\n", ["`fidelities`", "distinct"]),
    ("fidelity-same-run", HEAD + THREE + "fidelities: [{name: a, preset: 1m}, {name: b, preset: 1m}]\n", ["`fidelities`", "same model"]),
    ("fidelity-cost-zero", HEAD + THREE + "fidelities: [{name: a, preset: debug, cost: 0}, {name: b, preset: 1m}]\n",
     ["`fidelities.0.cost`", "greater than 0"]),
    ("fidelity-cost-nan", HEAD + THREE + "fidelities: [{name: a, preset: debug, cost: .nan}, {name: b, preset: 1m}]\n",
     ["`fidelities.0.cost`", "finite"]),
    ("fidelity-unknown-preset", HEAD + THREE + "fidelities: [{name: a, preset: huge}, {name: b, preset: 1m}]\n",
     ["`fidelities.0.preset`", "unknown preset"]),
    ("fidelity-table-missing", HEAD + THREE + "fidelities: [{name: a, preset: debug, runs: ../../etc/x.csv}, {name: b, preset: 1m}]\n",
     ["`fidelities.0.runs`", "not found"]),
    ("fidelity-target-unknown", HEAD + THREE + "fidelities: [{name: a, preset: debug}, {name: b, preset: 1m}]\ntarget: {fidelity: c}\n",
     ["`target.fidelity`", "'c'"]),
    ("cost-budget-without-fidelities", HEAD + THREE + "budget: {cost: 100}\n", ["`budget.cost`", "fidelities"]),
    ("mfgp-without-fidelities", HEAD + THREE + "strategy: {kind: mfgp, options: {threshold: -1}}\n", ["`strategy.options.threshold`"]),
]


@pytest.mark.parametrize("text,expected", [pytest.param(t, x, id=i) for i, t, x in HOSTILE])
def test_a_hostile_spec_is_refused_in_one_line(tmp_path: Path, text: str, expected: list[str]) -> None:
    with pytest.raises(SpecError) as exc:
        _load(tmp_path, text)
    msg = _one_line(exc.value)
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


ODD_BUT_FINE = [  # (id, spec text, check on the loaded spec)
    ("bool-for-bool-field", HEAD + THREE + "proxy: {compile: true}\n", lambda s: s.proxy.compile is True),
    ("merge-key-overrides", HEAD + THREE + "budget:\n  <<: {trials: 3, concurrency: 1}\n  trials: 5\n",
     lambda s: (s.budget.trials, s.budget.concurrency) == (5, 1)),
    ("floor-exactly-fills", HEAD + FOUR + "strategy: {kind: sobol, options: {min_weight: 0.25}}\n",
     lambda s: s.strategy.options["min_weight"] == 0.25),
    ("bounds-exactly-one", HEAD + THREE + "strategy: {kind: gp, options: {bounds: {books: [0.2, 0.2], code: [0.3, 0.3], math: [0.5, 0.5]}}}\n",
     lambda s: s.strategy.kind == "gp"),
    ("same-key-two-mappings", HEAD + THREE + "budget: {trials: 3}\nresources: {cpus: 1}\nproxy: {tokens_per_trial: 4096}\n",
     lambda s: s.budget.trials == 3),
    ("integer-float", HEAD + THREE + "budget: {trials: 4, trial_timeout_s: 10}\n", lambda s: s.budget.trial_timeout_s == 10.0),
]


@pytest.mark.parametrize("text,check", [pytest.param(t, c, id=i) for i, t, c in ODD_BUT_FINE])
def test_an_odd_but_valid_spec_loads(tmp_path: Path, text: str, check) -> None:
    assert check(_load(tmp_path, text))
