"""numpy's linear percentile in plain Python, bit for bit, for the engines' small samples."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(ordered: Sequence[float], q: float) -> float:
    """``np.percentile(ordered, q)`` (method "linear") of ascending, non-empty, NaN-free floats.

    The same float operations in the same order as numpy's (virtual index ``(n - 1) × q/100``, then
    its ``_lerp``), hence the same bits, without numpy's per-call overhead (a list of quantiles
    costs numpy an ``np.unique`` on top). ``q`` is a percentage in [0, 100]."""
    last = len(ordered) - 1
    virtual = last * (q / 100)
    if virtual >= last:  # numpy then takes index -1 for both neighbours
        below = above = last
        gamma = virtual + 1
    else:
        below = int(virtual)  # floor: virtual >= 0
        above = below + 1
        gamma = virtual - below
    a, b = ordered[below], ordered[above]
    diff = b - a
    return float(b - diff * (1 - gamma)) if gamma >= 0.5 else float(a + diff * gamma)


__all__ = ["percentile"]
