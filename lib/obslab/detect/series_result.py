"""What `obslab detect-series` found: points, episodes, one alert per episode, and their forms
(JSON and text lines)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Point:
    """One point of the series as judged."""

    timestamp: str
    value: float
    score: float | None  # |z|; None where the point was not judged (history still building)
    anomalous: bool
    rule: str | None = None  # spike | shift
    expected: float | None = None
    episode: int | None = None  # index into Result.episodes


@dataclass(frozen=True)
class Episode:
    """A run of anomalous points that is one event; when it has the evidence to page someone
    (`alert`), it raises one alert, at its start."""

    start: str
    end: str
    peak: str
    kind: str  # spike: a departure that came back | shift: a level change that stayed
    direction: str  # up | down
    score: float  # peak |z|; for a shift, the size of the move in robust standard deviations
    points: int
    value: float  # at the peak
    expected: float | None  # the baseline at the peak (for a shift: the old level where it began)
    alert: bool = True  # pages: the evidence (series.pages) and no earlier page's hold-off (series_alerts)


@dataclass(frozen=True)
class Result:
    """Every point, the episodes, and what reading the series found (summary)."""

    points: list[Point]
    episodes: list[Episode]
    summary: dict = field(default_factory=dict)

    def as_dict(self, all_points: bool = False) -> dict:
        """The `obslab detect-series --json` form; `all_points` adds every point with its expected value."""
        out = {
            "series": self.summary,
            "alerts": self.alerts(),
            "episodes": [vars(e) for e in self.episodes],
            # Per anomalous point, as before episodes existed; `episode` indexes "episodes".
            "anomalies": [{"timestamp": p.timestamp, "score": p.score, "rule": p.rule, "episode": p.episode}
                          for p in self.points if p.anomalous],
        }
        if all_points:
            out["points"] = [{"timestamp": p.timestamp, "value": p.value, "expected": p.expected, "score": p.score}
                             for p in self.points]
        return out

    def alerts(self) -> list[dict]:
        """One alert per episode that has the evidence to page, at its start: what an on-call
        engineer would be paged with."""
        return [{"time": e.start, "direction": e.direction, "score": e.score, "kind": e.kind, "episode": number}
                for number, e in enumerate(self.episodes) if e.alert]

    def header(self) -> str:
        """What was read: rows, points, repairs, the rhythm, where judging began."""
        info = self.summary
        repaired = (f"; {info['reordered']} rows sorted into place, {info['combined']} combined into others"
                    if info["reordered"] or info["combined"] else "")
        repaired += f"; {info['missing']} rows without a value left out" if info.get("missing") else ""
        rhythm = f"period {info['period']} steps ({info['period_source']})" if info["period"] else "no seasonality"
        return (f"{info['rows']} rows, {info['points']} points{repaired}; {rhythm}; judged from "
                f"{info['judged_from'] or '(never: too few points)'}")

    def episode_lines(self) -> list[str]:
        """One line per anomalous episode."""
        return [f"{e.kind:<5}  {e.direction:<4}  {e.start if e.start == e.end else f'{e.start} .. {e.end}'}  "
                f"peak {e.peak}  value={e.value:g}  expected={e.expected if e.expected is None else f'{e.expected:g}'}"
                f"  score={e.score:.1f}" for e in self.episodes]

    def footer(self, z: float) -> str:
        """How many episodes of each kind among the judged points."""
        kinds = [e.kind for e in self.episodes]
        return (f"{len(kinds)} episodes ({kinds.count('spike')} spike, {kinds.count('shift')} shift) in "
                f"{self.summary['judged']} judged points (z threshold {z:g})")
