"""Significance tests shared by the demo's claims and the human-study analysis (a bottom-layer
module: :mod:`worldboot.study` sits below :mod:`worldboot.evaluate` and uses them too).

* :func:`wilcoxon_paired`: two-sided Wilcoxon signed-rank test of paired samples (scipy), with
  an exact p-value for tied differences that scipy computes by permutation.
* :func:`paired_p`: its p-value over pairs where both values exist.
* :func:`binomial_p`: exact two-sided binomial test of hits against a chance rate.
* :func:`paired_test`, :func:`mcnemar`, :func:`binomial_test`: a direction and a p-value from
  one statistic each (the signed-rank sum; the discordant pairs; the hits), so that a claim's
  direction never disagrees with its test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

#: scipy's ``wilcoxon(method="auto")`` permutes every sign pattern up to this many pairs when
#: there are ties or zeros (and falls back to the normal approximation above it).
PERMUTATION_MAX_N = 13


def _tied_exact_pvalue(d: np.ndarray) -> float:
    """Exact two-sided p-value of the signed-rank sum with mid-ranked ties, zeros dropped.

    This is the number scipy's ``wilcoxon(method="auto")`` returns for tied or zero differences
    and n <= 13, where it evaluates all 2**n sign patterns through ``permutation_test``: that
    takes seconds per test at n = 13 (a study table holds dozens of tests). Counting the
    patterns per rank sum by dynamic programming over doubled (integer) mid-ranks gives the same
    distribution in microseconds; a test checks the two agree.
    """
    import numpy as np
    from scipy.stats import rankdata

    nonzero = d[d != 0]
    ranks2 = np.rint(2 * rankdata(np.abs(nonzero))).astype(int)
    counts = np.zeros(int(ranks2.sum()) + 1)
    counts[0] = 1.0
    for r in ranks2:
        shifted = np.zeros_like(counts)
        shifted[r:] = counts[:-r]
        counts = counts + shifted
    observed = int(ranks2[nonzero > 0].sum())
    total = counts.sum()
    less, greater = counts[: observed + 1].sum() / total, counts[observed:].sum() / total
    return float(min(1.0, 2 * min(less, greater)))


def wilcoxon_paired(
    x: list[float], y: list[float], zero_method: str = "wilcox"
) -> tuple[float | None, float | None]:
    """Two-sided Wilcoxon signed-rank test of paired samples (``scipy.stats.wilcoxon``).

    Returns:
        ``(statistic, p_value)``: ``(None, None)`` without pairs; ``(0.0, 1.0)`` when every
        difference is zero (scipy would divide by zero there).
    """
    import numpy as np
    from scipy.stats import wilcoxon

    if not x:
        return None, None
    # Per-item means are fractions like 1/3: round away float noise so equal gaps tie exactly.
    d = np.round(np.asarray(x, dtype=float) - np.asarray(y, dtype=float), 9)
    if not d.any():
        return 0.0, 1.0
    nonzero = np.abs(d[d != 0])
    tied = len(np.unique(nonzero)) < len(nonzero) or len(nonzero) < len(d)
    if zero_method == "wilcox" and tied and len(d) <= PERMUTATION_MAX_N:
        # The statistic does not depend on the method; the p-value is scipy's exact permutation one.
        result = wilcoxon(d, zero_method=zero_method, method="asymptotic")
        return float(result.statistic), _tied_exact_pvalue(d)
    result = wilcoxon(d, zero_method=zero_method, alternative="two-sided")
    return float(result.statistic), float(result.pvalue)


def paired_p(x: Sequence[float | None], y: Sequence[float | None]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired per-sample values, over the pairs where
    neither value is None (None when there is no such pair)."""
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None]
    if not pairs:
        return None
    return wilcoxon_paired([a for a, _ in pairs], [b for _, b in pairs])[1]


def binomial_p(hits: Sequence[float], chance: float) -> float | None:
    """Two-sided exact binomial p-value of ``sum(hits)`` successes in ``len(hits)`` trials
    against the rate ``chance`` (None without trials)."""
    from scipy.stats import binomtest

    return float(binomtest(int(sum(hits)), len(hits), chance).pvalue) if hits else None


def paired_test(x: Sequence[float | None], y: Sequence[float | None]) -> tuple[int, float | None]:
    """Wilcoxon signed-rank test of ``x`` against ``y`` over the pairs where both exist.

    Returns:
        ``(direction, p)``: the sign of the signed-rank sum W+ - W- (1: ``x`` ranks higher,
        -1: lower, 0: balanced or no pairs) and the two-sided p-value (None without pairs).
    """
    import numpy as np
    from scipy.stats import rankdata

    pairs = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None]
    if not pairs:
        return 0, None
    d = np.round(np.asarray([a - b for a, b in pairs], dtype=float), 9)
    nonzero = d[d != 0]
    ranks = rankdata(np.abs(nonzero))
    w = float(ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum())
    return int(np.sign(w)), wilcoxon_paired([a for a, _ in pairs], [b for _, b in pairs])[1]


def mcnemar(x: Sequence[float], y: Sequence[float]) -> tuple[int, float | None]:
    """Exact McNemar test of paired 0/1 outcomes (the same items, two models).

    Only the discordant pairs count: ``b`` items where ``x`` succeeds and ``y`` fails, ``c`` the
    reverse; under the null each is a fair coin, so p is the two-sided exact binomial p-value of
    ``b`` in ``b + c`` at 1/2 (scipy's ``binomtest``).

    Returns:
        ``(direction, p)``: the sign of ``b - c`` and p (1.0 without discordant pairs, None
        without items).
    """
    from scipy.stats import binomtest

    if len(x) != len(y):
        raise ValueError(f"paired outcomes of unequal length: {len(x)} and {len(y)}")
    if not x:
        return 0, None
    b = sum(1 for a, o in zip(x, y, strict=True) if a and not o)
    c = sum(1 for a, o in zip(x, y, strict=True) if o and not a)
    if b + c == 0:
        return 0, 1.0
    return (b > c) - (b < c), float(binomtest(b, b + c, 0.5).pvalue)


def binomial_test(hits: Sequence[float], chance: float) -> tuple[int, float | None]:
    """Exact two-sided binomial test of ``sum(hits)`` in ``len(hits)`` trials against ``chance``.

    Returns:
        ``(direction, p)``: the sign of ``sum(hits) - chance * len(hits)`` and p (None without trials).
    """
    if not hits:
        return 0, None
    k, n = sum(hits), len(hits)
    return (k > chance * n) - (k < chance * n), binomial_p(hits, chance)
