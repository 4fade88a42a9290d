"""What every lab scenario prints and writes: a timeline, a JSON file and a PNG plot under labs/results/.

A scenario says what it does as it goes (:meth:`Timeline.say`), so a newcomer can follow it live; the
same lines, with the figures and the raw samples, go into ``labs/results/NAME.json``. The plot puts
one lane per observed thing (the client's answers for each VIP, BIRD's best path) on one time axis, a
dot per sample coloured by who served it, with the fault marked: the figures can be checked by eye.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
NONE_LABEL = "none"  # no answer / no route


@dataclass
class Timeline:
    """Wall-clock events relative to ``t0`` (the moment the scenario starts)."""

    name: str
    t0: float = field(default_factory=time.time)
    events: list[dict[str, Any]] = field(default_factory=list)
    quiet: bool = False

    def say(self, text: str, at: float | None = None) -> None:
        at = time.time() if at is None else at
        self.events.append({"t": round(at - self.t0, 3), "event": text})
        if not self.quiet:
            print(f"[{at - self.t0:7.2f}s] {text}", flush=True)

    def rel(self, at: float) -> float:
        return round(at - self.t0, 3)


Lane = Sequence[tuple[float, str]]  # (wall time, label) samples


def first_after(samples: Lane, since: float, ok: Any) -> float | None:
    """Wall time of the first sample at or after ``since`` whose label satisfies ``ok``."""
    for t, label in samples:
        if t >= since and ok(label):
            return t
    return None


def seconds_where(samples: Lane, since: float, until: float, bad: Any) -> float:
    """Total time in [since, until] that the sampled state satisfied ``bad`` (sample-and-hold)."""
    total = 0.0
    points = [(t, label) for t, label in samples if since <= t <= until]
    for (t, label), (t_next, _) in zip(points, [*points[1:], (until, "")], strict=True):
        if bad(label):
            total += t_next - t
    return round(total, 2)


def lanes_of(samples: Iterable[tuple[float, Any]]) -> dict[str, list[tuple[float, str]]]:
    """A sampler's ``(time, {lane: label})`` samples as lanes; failed samples (exceptions) are skipped."""
    lanes: dict[str, list[tuple[float, str]]] = {}
    for t, value in samples:
        if isinstance(value, dict):
            for key, label in value.items():
                lanes.setdefault(key, []).append((t, label))
    return lanes


def save(
    name: str,
    title: str,
    data: dict[str, Any],
    tl: Timeline,
    lanes: Mapping[str, Lane],
    marks: Iterable[tuple[float, str]] = (),
    results: Path = RESULTS,
    *,
    write_files: bool = True,
) -> None:
    """The end of a scenario: the timeline and the lanes (relative times) into ``data``, then, with
    ``write_files``, ``NAME.json`` and ``NAME.png`` under ``results``, their paths printed."""
    data["timeline"] = tl.events
    data["lanes"] = {k: [(tl.rel(t), v) for t, v in lane] for k, lane in lanes.items()}
    if write_files:
        path = write(name, data, results)
        png = plot(name, title, lanes, tl.t0, marks, results)
        print(f"results: {path}" + (f", plot: {png}" if png else ""))


def write(name: str, data: Mapping[str, Any], results: Path = RESULTS) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def plot(
    name: str,
    title: str,
    lanes: Mapping[str, Lane],
    t0: float,
    marks: Iterable[tuple[float, str]] = (),
    results: Path = RESULTS,
) -> Path | None:
    """One row per lane, a dot per sample coloured by label; vertical lines at ``marks``. None without
    matplotlib (the JSON is still written)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:
        return None
    results.mkdir(parents=True, exist_ok=True)
    labels = sorted({label for lane in lanes.values() for _, label in lane} - {NONE_LABEL})
    palette = plt.get_cmap("tab10")
    colours = {label: palette(i % 10) for i, label in enumerate(labels)}
    colours[NONE_LABEL] = (0.8, 0.1, 0.1, 1.0)
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.7 * len(lanes)))
    names = list(lanes)
    for row, lane_name in enumerate(names):
        for label in [*labels, NONE_LABEL]:
            xs = [t - t0 for t, lab in lanes[lane_name] if lab == label]
            if xs:
                marker = "x" if label == NONE_LABEL else "|"
                ax.scatter(xs, [row] * len(xs), color=colours[label], marker=marker, s=60, linewidths=1.5)
    for at, text in marks:
        ax.axvline(at - t0, color="grey", linestyle="--", linewidth=1)
        ax.text(at - t0, len(names) - 0.5, " " + text, fontsize=8, va="top", rotation=0)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_xlabel("seconds")
    ax.set_title(title)
    handles = [
        Line2D([], [], color=colours[label], marker="o", linestyle="", label=label)
        for label in [*labels, NONE_LABEL]
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    path = results / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return round(ours / theirs, 3)


def fmt(value: float | None, unit: str = "s") -> str:
    return "n/a" if value is None else f"{value:.2f} {unit}"
