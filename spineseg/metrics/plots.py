"""Figures of metric results, written as PNG files without a display.

Figures are drawn on matplotlib's Agg canvas directly (no ``pyplot``), so nothing depends on
the process-wide backend and nothing is left open between calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from spineseg.errors import InputError
from spineseg.metrics.bland_altman import BlandAltmanStats

FIGURE_SIZE_INCHES = (7.0, 5.0)
DPI = 120
MAX_POINT_LABELS = 40  # beyond this the names would cover the points


def _format_value(value: float, units: str) -> str:
    return f"{value:.3g} {units}".rstrip()


def plot_bland_altman(
    stats: BlandAltmanStats,
    path: str | Path,
    *,
    title: str = "Bland-Altman: prediction vs truth",
    units: str = "",
    labels: Sequence[str] | None = None,
) -> Path:
    """Write a Bland-Altman plot of ``stats`` to ``path`` (PNG) and return the path.

    The plot shows each pair as a point (x: mean of the two measurements, y: their
    difference), a solid line at the bias and dashed lines at both 95 % limits of agreement,
    each labelled with its value in ``units`` (e.g. ``"mm²"`` or ``"mL"``). ``labels``, one per
    pair, names the points (written beside them when there are at most ``MAX_POINT_LABELS``).
    Raises ``InputError`` when the file cannot be written (missing folder, no permission).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(path, f"folder {path.parent} does not exist")
    figure = Figure(figsize=FIGURE_SIZE_INCHES, dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.scatter(
        stats.means, stats.differences, s=14, alpha=0.7, color="tab:blue", label=f"pairs (n={stats.n})"
    )
    if labels is not None and len(labels) == stats.n and stats.n <= MAX_POINT_LABELS:
        for label, x, y in zip(labels, stats.means, stats.differences, strict=True):
            axes.annotate(label, xy=(float(x), float(y)), xytext=(4, 2), textcoords="offset points", fontsize=7,
                          color="tab:blue")
    lines = (
        (stats.upper_limit, "+1.96 SD", "--", "tab:red"),
        (stats.bias, "bias", "-", "black"),
        (stats.lower_limit, "-1.96 SD", "--", "tab:red"),
    )
    for value, name, style, colour in lines:
        axes.axhline(value, linestyle=style, color=colour, linewidth=1.2)
        axes.annotate(
            f"{name}: {_format_value(value, units)}",
            xy=(1.0, value),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 3),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=9,
            color=colour,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.0},
        )
    unit_suffix = f" ({units})" if units else ""
    axes.set_xlabel(f"mean of prediction and truth{unit_suffix}")
    axes.set_ylabel(f"prediction - truth{unit_suffix}")
    axes.set_title(title)
    axes.legend(loc="upper left", fontsize=8)
    # Keep the limit lines inside the view even when all points sit near the bias.
    span = max(stats.upper_limit - stats.lower_limit, 1e-9)
    low = min(float(stats.differences.min()), stats.lower_limit) - 0.15 * span
    high = max(float(stats.differences.max()), stats.upper_limit) + 0.15 * span
    axes.set_ylim(low, high)
    figure.tight_layout()
    try:
        figure.savefig(path, format="png")
    except OSError as exc:
        raise InputError(path, f"cannot write the plot: {exc.strerror or exc}") from exc
    return path
