"""The one name -> object registry behind proxies, search spaces and search strategies (timm's shape).

Each kind keeps a :class:`Registry`; its ``register_*`` decorator, ``list_*`` and ``get_*`` / ``create_*`` functions
are thin wrappers, so every kind refuses a second registration and answers an unknown name the same way: a
``KeyError`` naming the closest registered names and listing all of them.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import TypeVar

T = TypeVar("T")


class Registry(dict[str, T]):
    """Objects of one ``kind`` (e.g. ``"proxy"``) by unique name; a plain ``dict`` otherwise."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def add(self, name: str, item: T, *, origin: str = "") -> None:
        """Register ``item`` as ``name``; a taken name is a ``ValueError`` (``origin`` says who holds it)."""
        if name in self:
            raise ValueError(f"a {self.kind} named {name!r} is already registered{origin}")
        self[name] = item

    def names(self, filter: str = "*") -> list[str]:
        """Sorted registered names matching the shell-style pattern ``filter``."""
        return sorted(n for n in self if fnmatch.fnmatch(n, filter))

    def lookup(self, name: str) -> T:
        """The object registered as ``name``; an unknown name is a ``KeyError`` listing the closest names."""
        try:
            return self[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self), n=3, cutoff=0.4)
            hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}; {hint}registered: {', '.join(self.names())}") from None
