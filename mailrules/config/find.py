"""Where the config file is (-c, $MAILRULES_CONFIG, the XDG path, /etc) and where the
state lives ($STATE_DIRECTORY, the XDG state path).

Kept apart from ``load`` (which needs pydantic) and ``state`` so that a quick poll can
find and fingerprint the config without importing the validation machinery.
"""

from __future__ import annotations

import os
from pathlib import Path as FsPath

from mailrules.errors import ConfigError, ConfigProblem


def discover(explicit: str | None) -> FsPath:
    """-c, then $MAILRULES_CONFIG, then the XDG config path, then /etc/mailrules/rules.yaml."""
    if explicit:
        return FsPath(explicit)
    if os.environ.get("MAILRULES_CONFIG"):
        return FsPath(os.environ["MAILRULES_CONFIG"])
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    candidates = [FsPath(xdg) / "mailrules" / "rules.yaml", FsPath("/etc/mailrules/rules.yaml")]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    looked = " and ".join(str(c) for c in candidates)
    raise ConfigError(
        [
            ConfigProblem(
                "",
                0,
                0,
                f"no config file found: $MAILRULES_CONFIG is not set and there is no "
                f"{looked}; copy rules.example.yaml to {candidates[0]}, or name a config "
                "file with --config FILE",
            )
        ]
    )


def default_state_dir() -> FsPath:
    """$STATE_DIRECTORY (systemd), else $XDG_STATE_HOME/mailrules, else ~/.local/state."""
    if os.environ.get("STATE_DIRECTORY"):
        return FsPath(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return FsPath(base) / "mailrules"
