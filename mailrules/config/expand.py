"""``~`` and ``${VAR}`` / ``$VAR`` in paths a config names (an account's ``maildir`` and
``deliver_to``, a ``deliver`` action's path): one expansion everywhere, so a path means
the same wherever it is written."""

from __future__ import annotations

import os
import re

from mailrules.config.yaml_loader import Path
from mailrules.rules.checker import Checker

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_path(value: str, path: Path, check: Checker, *, template: bool = False) -> str | None:
    """``value`` with ``~`` and environment variables expanded, made absolute; None (a
    config error at ``path``) when a variable is not set. With ``template``, the value is
    a template still to be parsed: braces in a variable's value are escaped so that they
    stay text."""
    missing: list[str] = []

    def sub(found: re.Match[str]) -> str:
        name = found.group(1) or found.group(2)
        if name not in os.environ:
            missing.append(name)
            return ""
        value = os.environ[name]
        return value.replace("{", "{{").replace("}", "}}") if template else value

    expanded = os.path.expanduser(_VAR.sub(sub, value))
    if missing:
        check.error(path, f"{check.where(path)}: environment variable {missing[0]} is not set")
        return None
    if template and not expanded:
        return expanded  # the template's own check names what is missing
    return os.path.abspath(expanded)
