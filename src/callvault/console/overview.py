"""The overview page: the last 24 hours in hourly bins, drawn as an SVG by the server.

`hourly_chart` is pure (times and outcomes in, shapes out) and tested without I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from callvault.console import repository
from callvault.db import utcnow
from callvault.moments import as_utc
from callvault.operations.backlog import Backlog, read_backlog
from callvault.recordings.models import RecordingStatus
from callvault.runtime import Runtime

HOURS = 24
WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 44, 44, 16, 36


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    kind: str  # stored | failed
    title: str


@dataclass(frozen=True)
class Chart:
    bars: tuple[Bar, ...]
    rate_points: str  # "x,y x,y ..." of the webhook success rate, hours without attempts left out
    rate_dots: tuple[tuple[float, float, str], ...]
    y_ticks: tuple[tuple[float, str], ...]  # left axis: recordings
    rate_ticks: tuple[tuple[float, str], ...]  # right axis: percent
    x_ticks: tuple[tuple[float, str], ...]
    stored: int
    failed: int
    attempts: int
    successful_attempts: int

    @property
    def success_rate(self) -> float | None:
        return 100 * self.successful_attempts / self.attempts if self.attempts else None


def _hour_index(moment: datetime, start: datetime) -> int | None:
    index = int((as_utc(moment) - start).total_seconds() // 3600)
    return index if 0 <= index < HOURS else None


@dataclass(frozen=True)
class _HourlyCounts:
    stored: list[int]
    failed: list[int]
    sent: list[int]
    ok: list[int]


def _count_per_hour(
    start: datetime,
    recordings: Iterable[tuple[str, datetime]],
    attempts: Iterable[tuple[int | None, datetime]],
) -> _HourlyCounts:
    counts = _HourlyCounts([0] * HOURS, [0] * HOURS, [0] * HOURS, [0] * HOURS)
    for status, moment in recordings:
        if (i := _hour_index(moment, start)) is not None:
            if status == RecordingStatus.STORED:
                counts.stored[i] += 1
            elif status == RecordingStatus.FAILED:
                counts.failed[i] += 1
    for code, moment in attempts:
        if (i := _hour_index(moment, start)) is not None:
            counts.sent[i] += 1
            counts.ok[i] += 1 if code is not None and 200 <= code < 300 else 0
    return counts


def _round_top(peak: int) -> int:
    """A round top for the left axis at or above `peak`: 1, 2, 5, 10, 20, 50..."""
    top = 1
    while top < peak:
        top = top * 2 if str(top)[0] in "15" else top * 5 // 2
    return top


def _bars_and_rates(
    start: datetime, counts: _HourlyCounts, top: int
) -> tuple[list[Bar], list[tuple[float, float, str]]]:
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / HOURS
    bars: list[Bar] = []
    points: list[tuple[float, float, str]] = []
    for i in range(HOURS):
        x = LEFT + i * slot + slot * 0.15
        width = slot * 0.7
        hour = (start + timedelta(hours=i + 1)).strftime("%H:00")
        base = float(TOP + plot_h)
        for kind, count in (("stored", counts.stored[i]), ("failed", counts.failed[i])):
            if count:
                height = plot_h * count / top
                base -= height
                bars.append(Bar(x, base, width, height, kind, f"{hour}: {count} {kind}"))
        if sent := counts.sent[i]:
            ok = counts.ok[i]
            points.append(
                (
                    LEFT + (i + 0.5) * slot,
                    TOP + plot_h * (1 - ok / sent),
                    f"{hour}: {ok} of {sent} webhook attempts succeeded",
                )
            )
    return bars, points


def hourly_chart(
    now: datetime,
    recordings: Iterable[tuple[str, datetime]],
    attempts: Iterable[tuple[int | None, datetime]],
) -> Chart:
    """Recordings stored/failed per hour (stacked bars) and the share of webhook attempts that
    got a 2xx per hour (a line), over the 24 hours before `now`."""
    start = now - timedelta(hours=HOURS)
    counts = _count_per_hour(start, recordings, attempts)
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / HOURS
    top = _round_top(max([s + f for s, f in zip(counts.stored, counts.failed, strict=True)] + [1]))
    bars, points = _bars_and_rates(start, counts, top)
    y_ticks = tuple(
        (TOP + plot_h * (1 - fraction), str(round(top * fraction))) for fraction in (0, 0.5, 1)
    )
    rate_ticks = tuple(
        (TOP + plot_h * (1 - fraction), f"{int(fraction * 100)}%") for fraction in (0, 0.5, 1)
    )
    x_ticks = tuple(
        (LEFT + (i + 0.5) * slot, (start + timedelta(hours=i + 1)).strftime("%H:00"))
        for i in range(HOURS)
        if i % 4 == 3
    )
    return Chart(
        bars=tuple(bars),
        rate_points=" ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points),
        rate_dots=tuple(points),
        y_ticks=y_ticks,
        rate_ticks=rate_ticks,
        x_ticks=x_ticks,
        stored=sum(counts.stored),
        failed=sum(counts.failed),
        attempts=sum(counts.sent),
        successful_attempts=sum(counts.ok),
    )


@dataclass(frozen=True)
class Overview:
    chart: Chart
    backlog: Backlog
    now: datetime


async def overview(runtime: Runtime, account_id: str) -> Overview:
    now = utcnow()
    since = now - timedelta(hours=HOURS)
    async with runtime.sessions() as session:
        recordings = await repository.recording_outcomes_since(session, account_id, since)
        attempts = await repository.attempt_outcomes_since(session, account_id, since)
        backlog = await read_backlog(session, account_id)
    return Overview(chart=hourly_chart(now, recordings, attempts), backlog=backlog, now=now)
