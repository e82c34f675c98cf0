"""The fidelities of a multi-fidelity sweep, as its strategy is told them (strategies/contract.FidelityPlan).

One function, shared by the controller (which tells the live strategy) and the report (which rebuilds
the strategy from the journal): both must hand `mfgp` the same costs and scales.
"""

from __future__ import annotations

from orchestrator.spec import SweepSpec
from orchestrator.strategies.contract import Fidelity, FidelityPlan


def fidelity_plan(spec: SweepSpec) -> FidelityPlan | None:
    """The fidelities a multi-fidelity sweep's strategy is told (None: a single-fidelity sweep)."""
    if not spec.fidelities:
        return None
    levels = tuple(Fidelity(f.name, spec.fidelity_cost(f.name), float(spec.fidelity_params(f.name)),
                            float(spec.fidelity_tokens(f.name))) for f in spec.fidelities)
    target = spec.target_fidelity
    at = spec.target.params if spec.target is not None and spec.target.params is not None else spec.fidelity_params(target)
    return FidelityPlan(levels, target, float(at), spec.budget.cost)
