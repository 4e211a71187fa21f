"""Statistics over seeds: mean, standard deviation and t-interval; paired tests with Holm; batch-size trend.

Every function takes plain numbers, so each can be checked against hand-computed values and scipy.
NaN means "not defined for this many values", never zero.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_SEEDS = 3  # cells with fewer seeds are marked: their spread and interval are not worth much
MIN_WILCOXON = 6  # below this the signed-rank test cannot reach p < 0.05 two-sided
NAN = float("nan")


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and 95% t-interval of one cell's values over seeds."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float

    @property
    def few(self) -> bool:
        return self.n < MIN_SEEDS


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """NaN values (a metric a run did not log) are left out and do not count in n."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Summary(0, NAN, NAN, NAN, NAN)
    mean = float(x.mean())
    if n < 2:
        return Summary(1, mean, NAN, NAN, NAN)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class PairedTest:
    """One method against the baseline on the seeds both have: difference is method minus baseline."""

    n: int
    mean_diff: float
    t_stat: float
    t_p: float
    wilcoxon_p: float


def paired_test(method: Mapping[int, float], baseline: Mapping[int, float]) -> PairedTest:
    """Paired t-test on matching seeds, plus Wilcoxon signed-rank when there are at least MIN_WILCOXON pairs."""
    seeds = sorted(
        s for s in method.keys() & baseline.keys() if math.isfinite(method[s]) and math.isfinite(baseline[s])
    )
    a = np.asarray([method[s] for s in seeds], dtype=float)
    b = np.asarray([baseline[s] for s in seeds], dtype=float)
    n = len(seeds)
    if n < 2:
        return PairedTest(n, float((a - b).mean()) if n else NAN, NAN, NAN, NAN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # identical differences: scipy returns NaN or inf itself
        t = stats.ttest_rel(a, b)
    wilcoxon_p = NAN
    if n >= MIN_WILCOXON and np.any(a != b):
        wilcoxon_p = float(stats.wilcoxon(a, b).pvalue)
    return PairedTest(n, float((a - b).mean()), float(t.statistic), float(t.pvalue), wilcoxon_p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order; NaN stays NaN and is not counted as a test."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(len(p), NAN)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    running = 0.0
    for rank, idx in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class Trend:
    """How a metric moves with batch size: range of the per-size means, and the slope per doubling."""

    n_runs: int
    n_sizes: int
    range: float
    slope: float
    slope_se: float
    slope_ci_low: float
    slope_ci_high: float


def batch_size_trend(batch_sizes: Sequence[int], values: Sequence[float], confidence: float = 0.95) -> Trend:
    """Least-squares fit of the metric against log2(batch size) over individual runs (not means), so the
    standard error reflects seed noise; the slope is the change per doubling of the batch size."""
    pairs = [(float(b), float(v)) for b, v in zip(batch_sizes, values, strict=True) if math.isfinite(v)]
    x = np.log2([b for b, _ in pairs])
    y = np.asarray([v for _, v in pairs])
    sizes = sorted(set(x))
    if len(sizes) < 2:
        return Trend(len(y), len(sizes), NAN, NAN, NAN, NAN, NAN)
    means = [y[x == s].mean() for s in sizes]
    fit = stats.linregress(x, y)
    se = float(fit.stderr) if len(y) > 2 else NAN
    half = float(stats.t.ppf(0.5 + confidence / 2, len(y) - 2)) * se if len(y) > 2 else NAN
    slope = float(fit.slope)
    return Trend(len(y), len(sizes), float(max(means) - min(means)), slope, se, slope - half, slope + half)


@dataclass(frozen=True)
class SlopeDifference:
    """Slope of arm a minus slope of arm b (per doubling of the batch size), with a t-test and interval."""

    diff: float
    se: float
    df: int
    p: float
    ci_low: float
    ci_high: float


def slope_difference(a: Trend, b: Trend, confidence: float = 0.95, plus: bool = False) -> SlopeDifference:
    """Whether two arms' batch-size slopes differ: t = (slope_a - slope_b) / sqrt(se_a² + se_b²) on
    n_a + n_b - 4 degrees of freedom (two separate fits, two parameters each). ``plus`` tests the sum
    slope_a + slope_b instead: |slope_a| < |slope_b| exactly when difference and sum have opposite signs,
    so a claim that one arm is less sensitive to batch size than another needs both tests."""
    df = a.n_runs + b.n_runs - 4
    diff = a.slope + b.slope if plus else a.slope - b.slope
    se = math.sqrt(a.slope_se**2 + b.slope_se**2)
    if not (math.isfinite(se) and se > 0 and df > 0):
        return SlopeDifference(diff, se, df, NAN, NAN, NAN)
    t = diff / se
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return SlopeDifference(diff, se, df, float(2 * stats.t.sf(abs(t), df)), diff - half, diff + half)
