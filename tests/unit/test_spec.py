"""Spec validation (orchestrator/spec.py) and the CLI's one-line errors (orchestrator/cli.py).

Every bad spec must raise SpecError with ONE line that names the field (dotted path) and the fix.
"""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.spec import SpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DEL = object()  # sentinel: remove the key

BASE: dict = {
    "name": "unit",
    "domains": {"books": {"demo": "books"}, "code": {"demo": "code"}},
    "tokenizer": "bytes",
    "proxy": {"preset": "debug", "tokens_per_trial": 4096},
    "objective": {"kind": "mean"},
    "strategy": {"kind": "sobol"},
    "budget": {"trials": 4, "concurrency": 2},
    "resources": {"cpus": 1, "gpus": 0},
    "seed": 0,
}


def spec_with(**edits) -> dict:
    """A deep copy of BASE with `a__b__c=value` set (or removed with DEL); `__` is the dotted path."""
    d = copy.deepcopy(BASE)
    for dotted, value in edits.items():
        *parents, last = dotted.split("__")
        node = d
        for p in parents:
            node = node.setdefault(p, {})
        if value is DEL:
            node.pop(last, None)
        else:
            node[last] = value
    return d


def assert_one_line_error(exc: pytest.ExceptionInfo, expected: list[str]) -> None:
    msg = str(exc.value)
    assert msg and "\n" not in msg, f"not one line: {msg!r}"
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


SYNTH = {"kind": "synthetic"}
BAD_SPECS = [  # (id, edits to BASE, substrings the message must contain)
    ("unknown-top-key", dict(colour="blue"), ["`colour`", "unknown key", "check the spelling"]),
    ("unknown-nested-key", dict(proxy__tokens_per_trail=1000), ["`proxy.tokens_per_trail`", "unknown key"]),
    ("unknown-domain-key", dict(domains__books__paths="x.txt"), ["`domains.books.paths`", "unknown key"]),
    ("trials-0", dict(budget__trials=0), ["`budget.trials`", "greater than or equal to 1", "raise it"]),
    ("trials-huge", dict(budget__trials=100_001), ["`budget.trials`", "lower it"]),
    ("trials-str", dict(budget__trials="many"), ["`budget.trials`", "valid integer"]),
    ("concurrency-neg", dict(budget__concurrency=-1), ["`budget.concurrency`", "raise it"]),
    ("gpus-neg", dict(resources__gpus=-1), ["`resources.gpus`", "greater than or equal to 0", "raise it"]),
    ("cpus-0", dict(resources__cpus=0), ["`resources.cpus`", "greater than 0", "raise it"]),
    ("seed-neg", dict(seed=-1), ["`seed`", "raise it"]),
    ("negative-weight", dict(objective={"kind": "weighted", "weights": {"books": -1.0, "code": 2.0}}),
     ["`objective`", "weights must be >= 0"]),
    ("zero-weights", dict(objective={"kind": "weighted", "weights": {"books": 0, "code": 0}}),
     ["`objective`", "positive sum"]),
    ("weighted-no-weights", dict(objective={"kind": "weighted"}), ["`objective`", "needs `weights"]),
    ("target-no-domain", dict(objective={"kind": "target"}), ["`objective`", "kind target needs `domain"]),
    ("objective-unknown-domain", dict(objective={"kind": "target", "domain": "poetry"}),
     ["objective", "unknown domain", "'poetry'", "'books'"]),
    ("weights-unknown-domain", dict(objective={"kind": "weighted", "weights": {"books": 1, "poetry": 1}}),
     ["objective", "'poetry'"]),
    ("objective-kind", dict(objective__kind="max"), ["`objective.kind`", "'target'", "use one of"]),
    ("demo-and-path", dict(domains__books__path="books.txt"), ["`domains.books`", "not both"]),
    ("proxy-domain-no-data", dict(domains__books={}), ["`domains.books`", "no data", "path:"]),
    ("unknown-demo", dict(domains__books__demo="poems"), ["`domains.books`", "'poems'", "books, code, math"]),
    ("one-domain", dict(domains={"books": {"demo": "books"}}), ["`domains`", "at least 2 domains"]),
    ("no-domains", dict(domains=DEL), ["`domains`", "Field required", "add it"]),
    ("name-digit", dict(domains__2books={"demo": "books"}), ["`domains`", "'2books'", "a letter then"]),
    ("name-dash", {"domains__my-books": {"demo": "math"}}, ["`domains`", "'my-books'"]),
    ("max-bytes-0", dict(domains__books__max_bytes=0), ["`domains.books.max_bytes`", "raise it"]),
    ("format", dict(domains__books={"path": "b.csv", "format": "csv"}), ["`domains.books.format`", "'parquet'"]),
    ("tokenizer-missing", dict(tokenizer="/nonexistent/tokenizer.json"),
     ["`tokenizer`", "'/nonexistent/tokenizer.json' does not exist", "point `path`"]),
    ("tokenizer-hf-no-path", dict(tokenizer={"kind": "huggingface"}), ["`tokenizer`", "needs `path:`"]),
    ("tokenizer-bytes-path", dict(tokenizer={"kind": "bytes", "path": "t.json"}), ["`tokenizer`", "only for kind huggingface"]),
    ("unknown-strategy", dict(strategy={"kind": "hyperband"}), ["`strategy`", "'hyperband'", "use one of bayesopt,", "sobol", "uniform"]),
    ("bayesopt-initial-0", dict(strategy={"kind": "bayesopt", "options": {"initial_trials": 0}}),
     ["`strategy.options.initial_trials`", "raise it"]),
    ("bayesopt-unknown-option", dict(strategy={"kind": "bayesopt", "options": {"n_init": 3}}),
     ["`strategy.options.n_init`", "unknown key"]),
    ("bayesopt-method", dict(strategy={"kind": "bayesopt", "options": {"method": "slow"}}), ["`strategy.options.method`", "'fast' or 'quality'"]),
    ("sobol-min-weight", dict(strategy={"kind": "sobol", "options": {"min_weight": 0.5}}), ["`strategy.options.min_weight`", "lower it"]),
    ("uniform-option", dict(strategy={"kind": "uniform", "options": {"seed": 1}}), ["`strategy.options.seed`", "unknown key"]),
    ("preset", dict(proxy__preset="huge"), ["`proxy.preset`", "'huge'", "debug, 1m"]),
    ("tokens-per-trial-0", dict(proxy__tokens_per_trial=0), ["`proxy.tokens_per_trial`", "raise it"]),
    ("learning-rate", dict(proxy__learning_rate=1.5), ["`proxy.learning_rate`", "lower it"]),
    ("seq-len", dict(proxy__seq_len=1), ["`proxy.seq_len`", "raise it"]),
    ("callable-dotted", dict(trainer={"kind": "python", "callable": "mypkg.train.run"}),
     ["`trainer.callable`", "not `module:function`", "mypkg.train:run_trial"]),
    ("callable-missing", dict(trainer={"kind": "python"}), ["`trainer.callable`", "add it"]),
    ("trainer-kind", dict(trainer={"kind": "jax"}), ["`trainer`", "'jax'", "'synthetic'"]),
    ("synthetic-unknown-key", dict(trainer={**SYNTH, "steps": 3}), ["`trainer.steps`", "unknown key"]),
    ("synthetic-noise", dict(trainer={**SYNTH, "noise": -1}), ["`trainer.noise`", "raise it"]),
    ("synthetic-optimum", dict(trainer={**SYNTH, "optimum": {"books": 1.0}}), ["trainer.optimum", "every domain"]),
    ("eval-domain-clash", dict(eval_domains={"books": {"demo": "books"}}), ["`eval_domains.books`", "also a training domain", "rename"]),
    ("eval-domain-no-data", dict(eval_domains={"qa": {}}), ["`eval_domains.qa`", "no data", "path:"]),
    ("eval-domain-synthetic", dict(eval_domains={"qa": {"demo": "math"}}, trainer=SYNTH), ["`eval_domains`", "only the proxy trainer"]),
    ("eval-domain-name", dict(eval_domains={"q-a": {"demo": "math"}}), ["`eval_domains.q-a`", "a letter then"]),
]


@pytest.mark.parametrize("edits,expected", [pytest.param(e, x, id=i) for i, e, x in BAD_SPECS])
def test_bad_spec_is_one_line_naming_the_field(edits: dict, expected: list[str]) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(spec_with(**edits))
    assert_one_line_error(exc, expected)


BAD_FILES = [  # (id, file text or None for a missing file, substrings)
    ("invalid-yaml", "name: x\ndomains: [books\n", ["not valid YAML", "at line", "fix the syntax"]),
    ("list-not-mapping", "- books\n- code\n", ["spec:", "YAML mapping"]),
    ("scalar", "just a string\n", ["YAML mapping"]),
    ("empty-file", "", ["YAML mapping"]),
    ("missing-file", None, ["spec file", "not found", "examples/"]),
]


@pytest.mark.parametrize("text,expected", [pytest.param(t, x, id=i) for i, t, x in BAD_FILES])
def test_bad_file_is_one_line(tmp_path: Path, text: str | None, expected: list[str]) -> None:
    path = tmp_path / "sweep.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert_one_line_error(exc, expected)


def test_examples_load() -> None:
    quick, synth = load_spec(EXAMPLES / "quickstart.yaml"), load_spec(EXAMPLES / "synthetic.yaml")
    assert len(quick.domain_names) == len(synth.domain_names) == 4
    assert quick.trainer.kind == "proxy" and quick.tokenizer.kind == "bytes"
    assert quick.strategy.options == {"initial_trials": 5} and quick.sweep_dir() == "runs/quickstart"
    assert synth.trainer.kind == "synthetic" and synth.trainer.noise == 0.005
    assert all(d.demo is None and d.path is None for d in synth.domains.values())


def test_defaults_fill_a_minimal_spec() -> None:
    spec = parse_spec({"domains": {"a": {"demo": "books"}, "b": {"path": ["x/*.txt", "y.jsonl"]}}})
    assert (spec.name, spec.trainer.kind, spec.strategy.kind, spec.objective.kind) == ("sweep", "proxy", "gp", "mean")
    assert (spec.budget.trials, spec.budget.concurrency, spec.proxy.preset) == (16, 2, "debug")
    assert spec.domains["b"].paths() == ["x/*.txt", "y.jsonl"] and spec.domains["a"].paths() == []


def test_objective_may_target_an_eval_domain() -> None:
    spec = parse_spec(spec_with(eval_domains={"qa": {"demo": "math"}}, objective={"kind": "target", "domain": "qa"}))
    assert spec.eval_domains["qa"].demo == "math" and spec.domain_names == ("books", "code")


def test_tokenizer_bytes_shorthand() -> None:
    assert parse_spec(spec_with(tokenizer="bytes")).tokenizer.model_dump() == {"kind": "bytes", "path": None}


def test_tokenizer_path_shorthand(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = ["the quick brown fox", "jumps over the lazy dog", "def main(): return 0", "the fox and the dog"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=80, special_tokens=["[UNK]", "</s>"]))
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))

    for ref in (str(path), str(tmp_path)):  # the file, or a directory holding tokenizer.json
        spec = parse_spec(spec_with(tokenizer=ref))
        assert spec.tokenizer.kind == "huggingface" and spec.tokenizer.path == ref
    from workers.data import load_tokenizer

    loaded = load_tokenizer(parse_spec(spec_with(tokenizer=str(path))).tokenizer)
    assert loaded.eos_id == tok.token_to_id("</s>") and len(loaded.encode(["the fox"])[0]) >= 1


def _reversed(d):
    """The same mapping with keys in reverse order at every level (domain order kept: it has meaning)."""
    if not isinstance(d, dict):
        return d
    keys = list(d) if set(d) == set(BASE["domains"]) else list(reversed(d))
    return {k: _reversed(d[k]) for k in keys}


def test_digest_ignores_key_order_and_formatting(tmp_path: Path) -> None:
    base = parse_spec(spec_with()).digest()
    assert parse_spec(_reversed(spec_with())).digest() == base
    assert parse_spec(spec_with(data={"cache_dir": "~/.cache/mixsweep"})).digest() == base  # explicit default
    block, flow = tmp_path / "block.yaml", tmp_path / "flow.yaml"
    block.write_text(yaml.safe_dump(spec_with(), default_flow_style=False, sort_keys=True))
    flow.write_text(yaml.safe_dump(spec_with(), default_flow_style=True, sort_keys=False))
    assert load_spec(block).digest() == load_spec(flow).digest() == base


@pytest.mark.parametrize("edits", [dict(budget__trials=5), dict(seed=1), dict(domains__code__demo="math"),
                                   dict(proxy__preset="1m"), dict(strategy={"kind": "sobol", "options": {"min_weight": 0.1}})])
def test_digest_changes_with_a_value(edits: dict) -> None:
    assert parse_spec(spec_with(**edits)).digest() != parse_spec(spec_with()).digest()


# ------------------------------------------------------------------------------- edge cases
def test_non_string_top_level_key_is_a_spec_error() -> None:
    with pytest.raises(SpecError):
        parse_spec({**spec_with(), 1: "x"})


def test_non_utf8_file_is_a_spec_error(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_bytes(b"\xff\xfe\x00name: x\n")
    with pytest.raises(SpecError):
        load_spec(tmp_path / "s.yaml")


def test_key_with_newline_still_gives_one_line() -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(spec_with(**{"proxy__a\nb": 1}))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("w", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(w: float) -> None:
    with pytest.raises(SpecError):
        parse_spec(spec_with(objective={"kind": "weighted", "weights": {"books": w, "code": 1.0}}))


def test_digest_depends_on_domain_order() -> None:
    a = spec_with(domains={"books": {}, "code": {}}, trainer=SYNTH)
    b = spec_with(domains={"code": {}, "books": {}}, trainer=SYNTH)
    assert parse_spec(a).digest() != parse_spec(b).digest()


# ----------------------------------------------------------------------------------------- CLI
CLI_SPECS = {  # name -> spec text written to <name>.yaml
    "unknown-key": "domains: {a: {}, b: {}}\ntrainer: {kind: synthetic}\ncolour: blue\n",
    "trials-0": "domains: {a: {}, b: {}}\nbudget: {trials: 0}\ntrainer: {kind: synthetic}\n",
    "invalid-yaml": "domains: [a\n",
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every CLI call of this module, started at once (each pays ~1.5 s of imports)."""
    d = tmp_path_factory.mktemp("cli")
    calls = {name: ["validate", str(d / f"{name}.yaml")] for name in CLI_SPECS}
    calls |= {"synthetic": ["validate", "examples/synthetic.yaml"], "status": ["status", "/nonexistent"]}
    for name, text in CLI_SPECS.items():
        (d / f"{name}.yaml").write_text(text)
    script = Path(sys.executable).parent / "mixsweep"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "orchestrator.cli"]
    procs = {k: subprocess.Popen(cmd + a, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, a in calls.items()}
    done = {k: p.communicate(timeout=120) for k, p in procs.items()}  # waits; then returncode is set
    return {k: subprocess.CompletedProcess(p.args, p.returncode, *done[k]) for k, p in procs.items()}


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0][7:].strip(), r.stderr
    return lines[0]


class TestCli:
    @pytest.mark.parametrize("name,expected", [("unknown-key", "`colour`: unknown key"), ("trials-0", "`budget.trials`"),
                                               ("invalid-yaml", "not valid YAML")])
    def test_validate_bad_spec(self, cli, name: str, expected: str) -> None:
        assert expected in _one_error_line(cli[name])

    def test_validate_synthetic_example(self, cli) -> None:
        r = cli["synthetic"]
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("ok: examples/synthetic.yaml") and not r.stderr.strip()

    def test_status_of_a_missing_dir(self, cli) -> None:
        assert "/nonexistent is not a sweep directory" in _one_error_line(cli["status"])

    def test_brackets_in_error_are_printed_verbatim(self, tmp_path: Path, monkeypatch, capsys) -> None:
        from orchestrator import cli as cli_module  # in-process: a subprocess costs ~1.5 s of imports

        (tmp_path / "s.yaml").write_text("domains: {a: {}, b: {}}\ntrainer: {kind: synthetic}\n'[ab]x': 1\n")
        monkeypatch.setattr(sys, "argv", ["mixsweep", "validate", str(tmp_path / "s.yaml")])
        with pytest.raises(SystemExit) as exc:
            cli_module.main()
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.startswith("error: ")
        assert "[ab]x" in err


# ------------------------------------------------------------------------ strict input (issue #14)
def test_a_key_given_twice_is_refused_naming_the_key_and_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("domains: {a: {}, b: {}}\ntrainer: {kind: synthetic}\nbudget: {trials: 3}\nbudget: {trials: 30}\n")
    with pytest.raises(SpecError) as exc:
        load_spec(path)
    assert_one_line_error(exc, ["'budget'", "twice", "line 3", "line 4", "keep one"])


def test_a_merge_key_may_override_what_it_merges(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("domains: {a: {}, b: {}}\ntrainer: {kind: synthetic}\nbudget:\n  <<: {trials: 3, concurrency: 1}\n  trials: 5\n")
    assert load_spec(path).budget.trials == 5


@pytest.mark.parametrize("edits,field", [
    (dict(budget__trials=True), "`budget.trials`"),
    (dict(proxy__tokens_per_param=True), "`proxy.tokens_per_param`"),
    (dict(seed=False), "`seed`"),
    (dict(strategy={"kind": "gp", "options": {"initial_trials": True}}), "`strategy.options.initial_trials`"),
    (dict(objective={"kind": "weighted", "weights": {"books": True, "code": 1}}), "`objective.weights`"),
])
def test_a_boolean_is_never_read_as_a_number(edits: dict, field: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(spec_with(**edits))
    assert_one_line_error(exc, [field, "boolean", "write a number"])


def test_booleans_stay_valid_for_boolean_fields() -> None:
    assert parse_spec(spec_with(proxy__compile=True)).proxy.compile is True


@pytest.mark.parametrize("name", ["books\n", "books\r", "books ", "bö", "a/b", "..", ""])
def test_a_domain_name_must_match_whole(name: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(spec_with(domains={name: {"demo": "books"}, "code": {"demo": "code"}}))
    assert_one_line_error(exc, ["`domains`", "a letter then"])


@pytest.mark.parametrize("kind,options,expected", [
    ("gp", {"min_weight": 0.4}, ["`strategy.options.min_weight`", "1.200 > 1", "at most 0.3333"]),
    ("sobol", {"min_weight": 0.45}, ["`strategy.options.min_weight`", "at most 0.3333"]),
    ("gp", {"bounds": {"books": [0.6, 1], "code": [0.6, 1]}}, ["`strategy.options.bounds`", "lower bounds", "1.200 > 1"]),
    ("regmix", {"bounds": {"books": [0, 0.1], "code": [0, 0.1], "math": [0, 0.1]}}, ["`strategy.options.bounds`", "upper bounds", "0.300 < 1"]),
    ("mixing_law", {"min_weight": 0.3, "bounds": {"books": [0, 0.2]}}, ["`strategy.options.bounds.books`", "below the floor 0.3"]),
])
def test_a_space_with_no_mixture_is_refused_at_validation(kind: str, options: dict, expected: list[str]) -> None:
    spec = spec_with(strategy={"kind": kind, "options": options}, domains__math={"demo": "math"})
    with pytest.raises(SpecError) as exc:
        parse_spec(spec)
    assert_one_line_error(exc, expected)


def test_a_tight_but_feasible_space_is_accepted() -> None:
    spec = spec_with(strategy={"kind": "gp", "options": {"min_weight": 0.2, "bounds": {"books": [0.2, 0.6]}}},
                     domains__math={"demo": "math"})
    assert parse_spec(spec).strategy.options["min_weight"] == 0.2


def test_the_frozen_spec_is_read_strictly_and_named(tmp_path: Path) -> None:
    from orchestrator.spec import load_frozen_spec

    with pytest.raises(SpecError) as exc:
        load_frozen_spec(tmp_path)
    assert_one_line_error(exc, ["no spec.yaml", "--spec"])
    (tmp_path / "spec.yaml").write_text("domains: {a: {}, b: {}}\ntrainer: {kind: synthetic}\nseed: 1\nseed: 2\n")
    with pytest.raises(SpecError) as exc:
        load_frozen_spec(tmp_path)
    assert_one_line_error(exc, ["frozen spec", "'seed'", "twice"])
    (tmp_path / "spec.yaml").write_text("mixsweep_version: 0.1.0\nspec_digest: x\ndomains: {a: {}, b: {}}\ntrainer: {kind: synthetic}\n")
    assert load_frozen_spec(tmp_path).domain_names == ("a", "b")
