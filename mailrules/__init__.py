"""mailrules: match new mail against YAML rules and act on it."""

__version__ = "0.1.0"
