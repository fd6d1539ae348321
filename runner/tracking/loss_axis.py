"""What a loss axis shows, and how it is scaled and labelled, for any loss.

**What is plotted.** When the objective's minimum value m is known (the registry knows it for f,
Rosenbrock, …; never for a custom expression), the curve is the gap ``loss − m``: it is ≥ 0, it is
what "converging" means, and it reads on a log axis, where the loss itself could not (f's loss is
negative: it ends at −4/3). A gap within rounding of 0 (two float64 ulps of max(1, |m|): f's descent
lands on −1.3333333333333335 as well as on −4/3) cannot be drawn on a log axis; it is drawn at that
floor, under a dotted line that says the minimum was reached. Without a known minimum, the loss
itself is plotted.

**The scale.** A gap to a known minimum, and finite values that are all > 0 and span more than 2
decades, get a log axis. Values that change sign (or touch 0) and whose magnitudes span more than 2
decades get a symmetric-log axis: linear within ±t, where t is the power of ten below the values'
10th-percentile magnitude, labelled only at ±10^k (with their sign: ``−1e+06``) and 0, every
``stride``-th decade so that at most ~9 labels show, and with the linear part one stride wide so that
0's label keeps its distance from ±t's. Anything else stays linear, where a log axis would only
distort. Non-finite values are left out of the choice. Log axes are labelled at whole decades chosen
here (matplotlib's locator reaches past a diverging run's 1e308 and overflows).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

DECADES = 2.0  # "spans decades": max/min magnitude ratio above 10**DECADES
MINOR_DECADES = 3.0  # a log axis over more decades than this shows no minor ticks
MAX_LABELS = 9  # labelled decades on a log or symmetric-log axis, at most
STRIDES = (1, 2, 3, 5, 10, 20, 25, 50, 100)  # decades between labels: the first that keeps within MAX_LABELS
ROUNDING_ULPS = 2.0  # a gap within this many float64 ulps of max(1, |min|) is "at the minimum"


class LossView:
    """The loss as plotted: the gap to a known minimum, or the loss itself."""

    def __init__(self, min_value: float | None = None) -> None:
        self.min_value = None if min_value is None or not math.isfinite(min_value) else float(min_value)

    @property
    def floor(self) -> float:
        """The smallest gap drawn: a gap at or below it is the minimum, to rounding."""
        return ROUNDING_ULPS * float(np.finfo(float).eps) * max(1.0, abs(self.min_value or 0.0))

    def values(self, loss: np.ndarray) -> np.ndarray:
        """What is drawn for these losses (non-finite ones stay non-finite)."""
        loss = np.asarray(loss, dtype=float)
        if self.min_value is None:
            return loss
        with np.errstate(invalid="ignore", over="ignore"):
            gap = loss - self.min_value
            return np.where(np.isfinite(gap), np.maximum(gap, self.floor), gap)

    def at_floor(self, loss: np.ndarray) -> bool:
        """Whether any of these losses is drawn at the floor (reached the minimum, to rounding)."""
        if self.min_value is None:
            return False
        with np.errstate(invalid="ignore", over="ignore"):
            return bool(np.any(np.asarray(loss, dtype=float) - self.min_value <= self.floor))

    def label(self, what: str = "loss") -> str:
        """The y label: ``loss − min (min = −1.333333)``, ``loss (min = 0)`` or ``loss``."""
        if self.min_value is None:
            return what
        if self.min_value == 0:
            return f"{what} (min = 0)"
        return f"{what} − min (min = {short(self.min_value)})"


def short(value: float) -> str:
    """A number in at most 7 significant digits, with a real minus sign (``−1.333333``, ``0.5``)."""
    return f"{value:.7g}".replace("-", "\N{MINUS SIGN}")


def choose_scale(values: np.ndarray, gap: bool = False) -> tuple[str, float | None]:
    """``("log" | "symlog" | "linear", linthresh)`` for these values, by the module's rule; a ``gap``
    to a known minimum (> 0 by construction) is always on a log axis."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "linear", None
    if v.min() > 0:
        return ("log", None) if gap or _spans(v.max(), v.min()) else ("linear", None)
    mag = np.abs(v[v != 0])
    if v.max() > 0 and mag.size:  # changes sign, or runs from 0 up
        # A robust small magnitude: a curve sampled finely through 0 has tiny |v| near the crossing
        # and must not count as spanning decades for that alone.
        small = float(np.percentile(mag, 10))
        if _spans(mag.max(), small):
            return "symlog", 10.0 ** math.floor(math.log10(small))
    return "linear", None


def _spans(hi: float, lo: float) -> bool:
    with np.errstate(over="ignore"):  # 1e300 / 1e-10 is inf, and rightly "spans decades"
        return bool(hi / lo > 10**DECADES)


def apply_scale(ax: Axes, values: np.ndarray, gap: bool = False) -> str:
    """Scale and label the y axis of ``ax`` for these (drawn) values; the scale's name."""
    scale, linthresh = choose_scale(values, gap)
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if scale == "log":  # v has values: a log scale is chosen only for some
        _fit_log_limits(ax, v)  # first: set_yscale autoscales, unless the limits are set
        ax.set_yscale("log")
        _log_labels(ax.yaxis, v)
    elif scale == "symlog":
        _symlog(ax, v, linthresh)
    return scale


def _log_labels(axis, v: np.ndarray) -> None:
    """Label a log axis at every ``stride``-th decade (at most ``MAX_LABELS``), written ``1e−05``
    rather than matplotlib's mathtext $10^{-5}$: parsing and typesetting mathtext was half the time
    of drawing a loss figure on a log axis (~175 against ~90 ms on the dev box), and the plain form
    reads as well. The ticks are placed here because matplotlib's locator reaches for the decade
    above a diverging run's 1e308, which overflows. Over more than ``MINOR_DECADES`` decades the
    minor ticks go: eight per decade, each a Tick object, they made such a figure ~1.7× slower to
    draw while too dense to read."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogFormatter, NullLocator

    axis.set_major_locator(FixedLocator(log_ticks(float(v.min()), float(v.max()))))
    axis.set_major_formatter(FuncFormatter(lambda y, _pos: signed_decade(y)))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    if _spans(v.max(), v.min() * 10 ** (MINOR_DECADES - DECADES)) or v.max() > 1e300:
        axis.set_minor_locator(NullLocator())


def log_ticks(lo: float, hi: float) -> list[float]:
    """Decades from below ``lo`` to above ``hi`` (within float range), every ``stride``-th one, the
    stride chosen so that at most ``MAX_LABELS`` fall inside [lo, hi]."""
    e_lo, e_hi = math.floor(math.log10(lo)), min(math.ceil(math.log10(hi)), 308)
    stride = decade_stride(e_hi - e_lo + 1)
    first = e_lo - e_lo % stride
    return [10.0**e for e in range(first, e_hi + 1, stride)]


def decade_stride(decades: int) -> int:
    """Decades between labels: the first of ``STRIDES`` that labels at most ``MAX_LABELS`` of them."""
    return next((s for s in STRIDES if math.ceil(decades / s) <= MAX_LABELS), math.ceil(decades / MAX_LABELS))


def _fit_log_limits(ax: Axes, v: np.ndarray) -> None:
    """Limits a little beyond the data in log space, inside float range: matplotlib's own margins
    overflow to inf for a diverging run's 1e308, which leaves an empty axes. Data within two decades
    (a gap that is all at the floor) get the whole decades around them, so that labels show."""
    lo, hi = math.log10(v.min()), math.log10(v.max())
    if hi - lo < DECADES:
        lo, hi = math.floor(lo - 0.1), math.ceil(hi + 0.1)
    pad = max(0.05 * (hi - lo), 0.1)
    ax.set_ylim(10 ** max(lo - pad, -320.0), 10 ** min(hi + pad, 308.0))


def _symlog(ax: Axes, v: np.ndarray, linthresh: float) -> None:
    """A symmetric-log axis whose labels all carry their sign and never crowd (module docstring)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ticks, stride = symlog_ticks(float(v.min()), float(v.max()), linthresh)
    ax.set_yscale("symlog", linthresh=linthresh, linscale=stride * 0.9)  # 0→t is one stride wide
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: signed_decade(y)))
    ax.yaxis.set_minor_locator(NullLocator())


def symlog_ticks(vmin: float, vmax: float, linthresh: float) -> tuple[list[float], int]:
    """Ticks at 0 and ±linthresh·10^(stride·i) covering [vmin, vmax]; (ticks, stride)."""
    e0 = round(math.log10(linthresh))
    top_pos = math.ceil(math.log10(vmax)) if vmax > linthresh else e0 - 1
    top_neg = math.ceil(math.log10(-vmin)) if vmin < -linthresh else e0 - 1
    stride = decade_stride((top_pos - e0 + 1) + (top_neg - e0 + 1) + 1)
    pos = [10.0**e for e in range(e0, top_pos + 1, stride)]
    neg = [-(10.0**e) for e in range(e0, top_neg + 1, stride)]
    return sorted(neg) + [0.0] + pos, stride


def signed_decade(y: float) -> str:
    """``1e+06``, ``−1e−05``, ``0``: minus signs as matplotlib writes them (U+2212)."""
    if y == 0:
        return "0"
    return f"{y:.0e}".replace("-", "\N{MINUS SIGN}")
