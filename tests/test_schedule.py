"""Account schedules: crontab lines read as crontab(5) reads them, and config errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailrules.config.load import parse_config
from mailrules.errors import ConfigError
from mailrules.schedule import backoff, cron_trigger, crontab_weekdays

THURSDAY = datetime(2026, 11, 19, 12, 0, tzinfo=UTC)


def fires(line: str, count: int = 3, start: datetime = THURSDAY) -> list[str]:
    """The next ``count`` fire times as 'Sun 22 09:00'."""
    trigger = cron_trigger(line, "UTC")
    out, previous, now = [], None, start
    for _ in range(count):
        nxt = trigger.get_next_fire_time(previous, now)
        out.append(nxt.strftime("%a %d %H:%M"))
        previous, now = nxt, nxt + timedelta(seconds=1)
    return out


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("0 9 * * 0", ["Sun 22 09:00", "Sun 29 09:00", "Sun 06 09:00"]),
        ("0 9 * * 7", ["Sun 22 09:00", "Sun 29 09:00", "Sun 06 09:00"]),
        ("0 9 * * sun", ["Sun 22 09:00", "Sun 29 09:00", "Sun 06 09:00"]),
        ("0 9 * * 1", ["Mon 23 09:00", "Mon 30 09:00", "Mon 07 09:00"]),
        ("0 9 * * 6,0", ["Sat 21 09:00", "Sun 22 09:00", "Sat 28 09:00"]),
        ("0 9 * * 5-7", ["Fri 20 09:00", "Sat 21 09:00", "Sun 22 09:00"]),
        ("0 9 * * fri-sun", ["Fri 20 09:00", "Sat 21 09:00", "Sun 22 09:00"]),
        ("0 9 * * 1-5", ["Fri 20 09:00", "Mon 23 09:00", "Tue 24 09:00"]),
        ("*/10 7-19 * * mon-fri", ["Thu 19 12:00", "Thu 19 12:10", "Thu 19 12:20"]),
    ],
)
def test_cron_weekday_numbers_are_crontabs_not_apschedulers(line, expected):
    # APScheduler's own from_crontab reads "0" as Monday; crontab(5) says Sunday.
    assert fires(line) == expected


def test_cron_weekday_steps_count_from_sunday():
    assert crontab_weekdays("*/2") == "sun,tue,thu,sat"
    assert crontab_weekdays("1-5/2") == "mon,wed,fri"
    assert crontab_weekdays("0-7") == "*"


def test_cron_with_day_and_weekday_fires_when_either_matches():
    # crontab(5): the 1st of the month and every Monday, not only Mondays that are the 1st.
    assert fires("0 9 1 * mon", 4, datetime(2026, 11, 25, tzinfo=UTC)) == [
        "Mon 30 09:00",
        "Tue 01 09:00",
        "Mon 07 09:00",
        "Mon 14 09:00",
    ]


def account(extra: str) -> str:
    return "accounts:\n  a:\n    maildir: /tmp/m\n" + extra + "rules: []\n"


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml")
    return str(caught.value)


def test_schedules_are_parsed_with_sensible_defaults():
    config = parse_config(account(""), "c.yaml")
    assert config.accounts["a"].schedule.every == 300
    text = account("    schedule: {cron: '0 9 * * 0', jitter: 10s}\n")
    schedule = parse_config(text, "c.yaml").accounts["a"].schedule
    assert (schedule.cron, schedule.jitter) == ("0 9 * * 0", 10)
    imap = "accounts:\n  w:\n    imap: {tunnel: [x]}\n    push: idle\nrules: []\n"
    backstop = parse_config(imap, "c.yaml").accounts["w"].schedule
    assert backstop.every == 900 and backstop.effective_jitter == 30


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            "    schedule: {cron: '0 9 * * 8'}\n",
            "c.yaml:4:22: accounts.a.schedule.cron: weekday 8 is out of range: use 0-7 "
            "(0 and 7 are Sunday)",
        ),
        (
            "    schedule: {cron: '61 * * * *'}\n",
            "c.yaml:4:22: accounts.a.schedule.cron: Error validating expression '61'",
        ),
        (
            "    schedule: {cron: '0 9 * *'}\n",
            "accounts.a.schedule.cron: expected 5 fields (minute hour day month weekday)",
        ),
        (
            "    schedule: {cron: '0 9 * * 5-1'}\n",
            "weekday range '5-1' runs backwards; split it, e.g. 'fri-sat,sun'",
        ),
        ("    schedule: {every: 300}\n", "c.yaml:4:23: accounts.a.schedule.every: a bare number"),
        ("    schedule: {every: soon}\n", "accounts.a.schedule.every: expected a duration"),
        (
            "    schedule: {every: 5m, cron: '* * * * *'}\n",
            "c.yaml:4:15: accounts.a.schedule: give exactly one of every",
        ),
        ("    schedule: {evry: 5m}\n", "unknown key 'evry'; did you mean 'every'?"),
        ("    push: idle\n", "c.yaml:4:11: accounts.a.push: idle needs an imap account"),
        ("    push: imap\n", "accounts.a.push: expected one of 'idle' or 'none'"),
    ],
)
def test_schedule_mistakes_are_reported_with_position(extra, needle):
    assert needle in problems(account(extra))


def test_backoff_doubles_up_to_the_cap_with_jitter():
    for failures, full in ((1, 15), (2, 30), (3, 60), (10, 900), (30, 900)):
        delays = [backoff(failures, 15, 900) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1
