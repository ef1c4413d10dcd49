"""``mailrules status``: what the service last did, from the state store, for people and JSON.

The service records per account its last poll, last success, last error and next run,
per IDLE connection whether it is up, and per periodic job the same as for accounts.
Whether a service is running comes from the state directory's lock, so the command
works (and says so) when none is. Times are UTC: ISO 8601 in JSON, ``YYYY-MM-DD
HH:MM:SS UTC`` in text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailrules import lock
from mailrules.printable import printable
from mailrules.state import ServiceStatus, State


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _text(when: float | None) -> str:
    if when is None:
        return "-"
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _entry(row: ServiceStatus) -> dict[str, Any]:
    return {
        "name": row.name,
        "last_poll": _iso(row.last_run),
        "last_ok": _iso(row.last_ok),
        "last_error": row.last_error,
        "last_error_at": _iso(row.last_error_at),
        "failures_in_a_row": row.failures,
        "next_run": _iso(row.next_run),
        "detail": row.detail,
        "updated": _iso(row.updated),
    }


def collect(
    state: State | None,
    state_dir: Path,
    account: str | None = None,
    jobs: Sequence[Any] = (),
) -> dict[str, Any]:
    """The status as plain data. ``jobs`` are PeriodicJobs whose ``describe`` adds a line."""
    held = lock.holder(state_dir)
    out: dict[str, Any] = {
        "service": {"running": held is not None and held[1] == "service"},
        "accounts": [],
        "jobs": [],
    }
    if held is not None:
        out["service"].update(pid=held[0], holder=held[1])
    if state is None:
        return out
    rows = state.service_status()
    accounts = {r.name: r for r in rows if r.kind == "account"}
    for name, row in accounts.items():
        if account and name != account:
            continue
        entry = _entry(row)
        entry["idle"] = [
            {**_entry(r), "folder": r.name.split("/", 1)[1]}
            for r in rows
            if r.kind == "idle" and r.name.split("/", 1)[0] == name
        ]
        out["accounts"].append(entry)
    descriptions = {job.name: job.describe for job in jobs if job.describe is not None}
    for row in rows:
        if row.kind != "job":
            continue
        entry = _entry(row)
        describe = descriptions.get(row.name)
        if describe is not None:
            try:
                entry["info"] = describe(state)
            except Exception as exc:  # a status line must never break the command
                entry["info"] = f"cannot tell: {exc}"
        out["jobs"].append(entry)
    return out


def render(report: dict[str, Any]) -> list[str]:
    """The report as lines for a person."""
    service = report["service"]
    if service["running"]:
        lines = [f"service: running (pid {service['pid']})"]
    elif service.get("holder"):
        lines = [f"service: not running ({service['holder']} is, pid {service['pid']})"]
    else:
        lines = ["service: not running"]
    running = service["running"]
    if not report["accounts"] and not report["jobs"]:
        lines.append("no service status recorded yet (it is written by 'mailrules run')")

    def times(entry: dict[str, Any], what: str = "poll") -> str:
        text = f"last {what} {_when(entry['last_poll'])}"
        if entry["last_poll"]:
            ok = entry["failures_in_a_row"] == 0
            text += " (ok)" if ok else f" (failed, {entry['failures_in_a_row']} in a row)"
        if running:
            text += f", next run {_when(entry['next_run'])}"
        return text

    for entry in report["accounts"]:
        lines.append(f"account {entry['name']}: {times(entry)}")
        if entry["detail"]:
            lines.append(f"  schedule: {printable(entry['detail'])}")
        if entry["last_error"]:
            lines.append(_last_error("  ", entry))
        for idle in entry["idle"]:
            state = printable(idle["detail"]) if running else "not connected (service not running)"
            line = f"  IDLE {printable(idle['folder'])}: {state}"
            if running and idle["next_run"]:
                line += f" at {_when(idle['next_run'])}"
            lines.append(line)
            if idle["last_error"]:
                lines.append(_last_error("    ", idle))
    for entry in report["jobs"]:
        lines.append(f"job {entry['name']}: {times(entry, 'run')}")
        if entry.get("info"):
            lines.append(f"  {printable(entry['info'])}")
        if entry["last_error"]:
            lines.append(_last_error("  ", entry))
    return lines


def _last_error(indent: str, entry: dict[str, Any]) -> str:
    """A stored error, escaped: it may quote a server, a command or a message."""
    return f"{indent}last error {_when(entry['last_error_at'])}: {printable(entry['last_error'])}"


def _when(iso: str | None) -> str:
    if iso is None:
        return "-"
    return _text(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
