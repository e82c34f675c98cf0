"""Python-callable trainers used by the integration tests (`trainer: {kind: python}`)."""

import math


def quadratic(mixture, report, seed):
    """Known optimum at equal weights; reports twice before returning."""
    k = len(mixture)
    base = sum((w - 1 / k) ** 2 for w in mixture.values())
    for step in (1, 2):
        report(step=step, tokens=step * 100, losses={d: 2 + base + 1 / step for d in mixture})
    return {d: 2 + base for d in mixture}


def fails_when_first_domain_dominates(mixture, report, seed):
    first = next(iter(mixture))
    if mixture[first] > 0.4:
        raise ValueError(f"refusing {first}={mixture[first]:.2f}")
    return quadratic(mixture, report, seed)


def returns_nan(mixture, report, seed):
    return {d: math.nan for d in mixture}


def diverges(mixture, report, seed):
    report(step=1, tokens=100, losses={d: 3.0 for d in mixture})
    report(step=2, tokens=200, losses={d: float("inf") for d in mixture})
    return {d: 3.0 for d in mixture}


def hangs(mixture, report, seed):
    import time

    report(step=1, tokens=100, losses={d: 3.0 for d in mixture})
    time.sleep(3600)
