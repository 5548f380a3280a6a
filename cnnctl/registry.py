"""Name -> builder registries, filled by decorators at import time.

One ``Registry`` per kind of thing (architectures, data sources). A bad name
is a ``CnnctlError`` that lists the valid names and the closest match, never a
bare ``KeyError`` [timm ``@register_model``, detectron2 ``Registry``].
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cnnctl.errors import CnnctlError


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Callable[..., Any]
    meta: dict[str, Any] = field(default_factory=dict)


class Registry:
    """A named collection of builders with metadata."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Callable], Callable]:
        """Decorator: ``@REG.register("resnet20", task="classify", paper=...)``."""

        def deco(fn: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = Entry(name, fn, dict(meta))
            return fn

        return deco

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries)
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        return name in self._entries


def unknown_name(kind: str, name: str, valid) -> CnnctlError:
    """The error for a name that is not among ``valid``: the closest match, then every valid name."""
    names = sorted(valid)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return CnnctlError(f"unknown {kind} {name!r}", hint=f"{hint}valid {kind}s: {', '.join(names)}")
