"""The hold-off after a page: once a series has paged someone, later episodes the same way within
HOLD_OFF page again only when they are clearly worse (ESCALATION x the score that paged).

An episode that has the evidence to page (`series.pages`) but follows a page of the same
direction within HOLD_OFF of its start, and is not more than ESCALATION times its score, keeps
`alert = False`: the engineer already paged is looking at that series. The hold-off runs from
the page, not from the episodes it held (a series that keeps misbehaving pages again once the
hold-off is over); an escalation pages and starts a hold-off of its own. The directions are
apart: a drop after a rise is news.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from obslab.detect.series_result import Episode

# Prometheus Alertmanager's default repeat_interval: a page about a series stands for 4 hours
# (240 steps of minute points, 4 of hourly ones; a coarser series pages at every step).
HOLD_OFF = timedelta(hours=4)
# Twice the score that paged (peak |z|, or a shift's size): a new, worse incident, not the
# aftershocks of the one the engineer is already looking at.
ESCALATION = 2.0


def hold_off(episodes: list[Episode], starts: list[datetime]) -> list[Episode]:
    """The episodes (in time order, `starts` their start instants) with the alerts that fall in
    an earlier page's hold-off, and do not escalate it, turned off."""
    paged: dict[str, tuple[datetime, float]] = {}  # direction -> (start, score) of its last page
    out = []
    for episode, start in zip(episodes, starts):
        if episode.alert:
            last = paged.get(episode.direction)
            if last and start - last[0] <= HOLD_OFF and episode.score <= ESCALATION * last[1]:
                episode = replace(episode, alert=False)
            else:
                paged[episode.direction] = (start, episode.score)
        out.append(episode)
    return out
