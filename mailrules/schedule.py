"""When the service polls an account: ``every: 5m`` or a crontab line, as APScheduler triggers.

A cron schedule is read as crontab(5) reads it, which APScheduler 3 does not do on two
points, so both are translated here rather than passed through:

* **Weekday numbers.** In crontab 0 and 7 are Sunday and 1 is Monday; APScheduler 3
  counts from Monday = 0, and its ``CronTrigger.from_crontab`` passes numbers through, so
  ``0 9 * * 0`` would fire on Mondays. The weekday field is expanded here into day names
  (``1-5`` -> ``mon,tue,wed,thu,fri``; ``*/2`` -> ``sun,tue,thu,sat``).
* **Day of month and day of week together.** When both are restricted, crontab fires
  when *either* matches (``0 9 1 * mon``: the 1st and every Monday); APScheduler fires
  only when both do. Such a line becomes two triggers joined by ``OrTrigger``.

The other fields (minute, hour, day, month) mean the same in both and go to
``CronTrigger`` as written, whose own errors are reported as config errors.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # APScheduler is imported when a trigger is made: run --once needs none
    from apscheduler.triggers.base import BaseTrigger

DEFAULT_EVERY = 300.0  # seconds between polls without push
DEFAULT_BACKSTOP = 900.0  # with push: idle, polls only catch what IDLE missed
MAX_DEFAULT_JITTER = 30.0
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _weekday(text: str, *, range_end: bool = False) -> int:
    """A crontab weekday, 0-7 (0 and 7: Sunday) or a name; Sunday ending a range is 7."""
    if text.isdigit():
        number = int(text)
        if number > 7:
            raise ValueError(f"weekday {text} is out of range: use 0-7 (0 and 7 are Sunday)")
        return number
    if text in WEEKDAYS:
        return 7 if text == "sun" and range_end else WEEKDAYS.index(text)
    raise ValueError(
        f"unknown weekday {text!r}: use 0-7 (0 and 7 are Sunday) or {', '.join(WEEKDAYS)}"
    )


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field as APScheduler day names: ``0,6`` -> ``sun,sat``.

    Raise ValueError, with a message for the user, if the field is not valid crontab.
    """
    days: set[int] = set()
    for part in field.lower().split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"weekday step {step_text!r} must be a whole number above 0")
            step = int(step_text)
        if base == "*":
            low, high = 0, 7
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _weekday(first), _weekday(last, range_end=True)
            if low > high:
                raise ValueError(
                    f"weekday range {base!r} runs backwards; split it, e.g. 'fri-sat,sun'"
                )
        elif slash:
            raise ValueError(f"weekday step {part!r} needs a range or '*' before the '/'")
        else:
            low = high = _weekday(base)
        days.update(day % 7 for day in range(low, high + 1, step))
    if len(days) == len(WEEKDAYS):
        return "*"
    return ",".join(WEEKDAYS[day] for day in sorted(days))


def cron_trigger(line: str, timezone: tzinfo | str | None = None, jitter: float = 0) -> BaseTrigger:
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    """The trigger for a five-field crontab line. Raise ValueError if it is not valid."""
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(
            f"expected 5 fields (minute hour day month weekday), got {len(fields)}: {line!r}"
        )
    minute, hour, day, month, weekday = fields
    days = crontab_weekdays(weekday)
    common = {"minute": minute, "hour": hour, "month": month, "timezone": timezone}
    if not day.startswith("*") and not weekday.startswith("*"):
        # crontab(5): "the command will be run when either field matches"
        return OrTrigger(
            [
                CronTrigger(day=day, day_of_week="*", **common),
                CronTrigger(day="*", day_of_week=days, **common),
            ],
            jitter=jitter or None,
        )
    return CronTrigger(day=day, day_of_week=days, jitter=jitter or None, **common)


@dataclass(frozen=True)
class Schedule:
    """An account's polling schedule: exactly one of ``every`` (seconds) or ``cron``."""

    every: float | None = None
    cron: str | None = None
    jitter: float | None = None  # None: the default for the kind of schedule

    @property
    def effective_jitter(self) -> float:
        if self.jitter is not None:
            return self.jitter
        if self.every is not None:
            return min(self.every / 10, MAX_DEFAULT_JITTER)
        return 0.0

    def trigger(self, timezone: tzinfo | str | None = None) -> BaseTrigger:
        jitter = self.effective_jitter
        if self.cron is not None:
            return cron_trigger(self.cron, timezone, jitter)
        assert self.every is not None
        from apscheduler.triggers.interval import IntervalTrigger

        return IntervalTrigger(seconds=self.every, timezone=timezone, jitter=jitter or None)

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron!r}"
        return f"every {_seconds(self.every or 0)}"


def _seconds(value: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{value / size:g}{unit}"
    return f"{value:g}s"


def backoff(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after ``failures`` failures in a row: doubling from ``base`` up to
    ``cap``, then a random part of it cut off (between 0 and a half), so that clients that
    failed together do not come back together."""
    full = min(cap, base * 2 ** max(0, failures - 1))
    return full * random.uniform(0.5, 1.0)  # noqa: S311 - spreading retries, not security
