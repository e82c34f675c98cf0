"""The live view of `mixsweep run`: trials running and finished, and the best objective so far.

It only reads the controller's SweepState (the same fold as the journal), so what it shows is what
`mixsweep status` would show.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.state import SweepState
from orchestrator.trial import TrialStatus


class SweepView:
    def __init__(self, spec, console: Console, live: bool = True) -> None:
        self.spec, self.console, self.live_enabled = spec, console, live
        self._live: Live | None = None
        self._state: SweepState | None = None

    def __enter__(self) -> "SweepView":
        if self.live_enabled:
            self._live = Live(Text("starting..."), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(*exc)

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def update(self, record: dict, state: SweepState) -> None:
        self._state = state
        if self._live is not None:
            self._live.update(self._render())
        elif record["event"] in ("trial_completed", "trial_failed"):
            t = state.trial(record["trial"])
            what = f"objective {t.objective:.4f}" if t.objective is not None else f"FAILED: {t.reason}"
            if t.preset is not None:  # a scale-ladder re-training (orchestrator/ladder.py)
                self.console.print(f"[ladder {t.preset}] {t.role} trial {t.id} {what}", highlight=False)
                return
            best = state.best()
            done = len(state.completed) + len(state.by_status(TrialStatus.FAILED))
            self.console.print(f"[{done}/{state.budget}] trial {t.id} {what}"
                               + (f"   best {best.objective:.4f}" if best else ""), highlight=False)

    def _render(self):
        s = self._state
        if s is None:
            return Text("starting...")
        best = s.best()
        head = Text(
            f"{s.name}: {len(s.completed)} completed, {len(s.by_status(TrialStatus.FAILED))} failed, "
            f"{len(s.by_status(TrialStatus.RUNNING))} running, budget {s.budget}"
            + (f", {s.reused} repeats answered" if s.reused else "") + (f", {s.replicates} replicates" if s.replicates else "")
            + s.cost_line()
            + "   "
            + (f"best {best.objective:.4f} ({best.id})" if best else "best -"),
            style="bold",
        )
        table = Table(expand=False)
        for col in ("trial", "status", "mixture", "tokens", "objective / last loss"):
            table.add_column(col)
        recent = sorted(s.trials.values(), key=lambda t: t.proposed_seq)[-12:]
        for t in recent:
            mix = " ".join(f"{d[:6]}={w:.2f}" for d, w in t.mixture.items())
            tokens = f"{t.last_progress['tokens']:,}" if t.last_progress else ""
            if t.objective is not None:
                value = f"{t.objective:.4f}"
            elif t.last_progress:
                losses = t.last_progress["losses"]
                value = f"~{sum(losses.values()) / len(losses):.4f}"
            else:
                value = t.reason or ""
            style = {TrialStatus.FAILED: "red", TrialStatus.RUNNING: "cyan"}.get(t.status, "")
            table.add_row(t.id, t.status.value, mix, tokens, value, style=style)
        return Group(head, table)
