"""Field paths: where a metric rule reads a value of an event (``properties.plan``,
``user_id``, ``type``), parsed once and read without a parser per event."""

from __future__ import annotations

import re
from typing import Any

from attrs import field, frozen

from twisted_rta.events.model import Event

ROOTS = ("type", "user_id", "session_id", "properties")
_KEY = re.compile(r"[^.\s]+")


@frozen(cache_hash=True)  # a key of the per-batch extraction caches
class FieldPath:
    """``type``, ``user_id``, ``session_id`` or ``properties.<key>[.<key>...]`` (a dot path
    into nested objects: ``properties.cart.total``).

    ``read`` gives the value, or None when the path is absent, null, or crosses something
    that is not an object: a rule treats all three as a missing field.
    """

    text: str
    root: str
    keys: tuple[str, ...] = ()
    # The key when the path is one top-level property (the fast, common case), else None.
    top_property: str | None = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        top = self.keys[0] if self.root == "properties" and len(self.keys) == 1 else None
        object.__setattr__(self, "top_property", top)

    @classmethod
    def parse(cls, text: object) -> FieldPath:
        """The path ``text`` names; ValueError saying what a path may be otherwise."""
        if not isinstance(text, str):
            raise ValueError(f"must be a field path string, got {type(text).__name__}")
        root, dot, rest = text.partition(".")
        if root == "properties" and dot:
            keys = tuple(rest.split("."))
            if all(_KEY.fullmatch(key) for key in keys):
                return cls(text, root, keys)
        elif root in ROOTS and root != "properties" and not dot:
            return cls(text, root)
        raise ValueError(
            f"{text!r} is not a field path: use type, user_id, session_id or "
            "properties.<key> (dots for nested keys, no spaces)"
        )

    def read(self, event: Event) -> Any:
        if self.root != "properties":
            return getattr(event, self.root)
        value: Any = event.properties
        for key in self.keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    def __str__(self) -> str:
        return self.text
