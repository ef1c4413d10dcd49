"""One object per distinct value, for the values that thousands of messages share."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class Pool(Generic[T]):
    """``pool(value)`` returns the first equal value it was given. A full pass holds
    thousands of messages with a few kinds of flag set or plan step; sharing them keeps
    its memory down. Past ``limit`` distinct values, values are returned as they are."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._values: dict[T, T] = {}

    def __call__(self, value: T) -> T:
        if len(self._values) >= self.limit:
            return self._values.get(value, value)
        return self._values.setdefault(value, value)
