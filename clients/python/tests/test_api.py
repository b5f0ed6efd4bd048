"""The public surface: both clients have the same methods, and the tests call each one."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import List

import marquee


def public_methods(cls: type) -> List[str]:
    return sorted(n for n, v in vars(cls).items() if callable(v) and not n.startswith("_"))


def test_async_client_mirrors_client() -> None:
    assert public_methods(marquee.AsyncClient) == public_methods(marquee.Client)
    for name in public_methods(marquee.Client):
        sync, async_ = (inspect.signature(getattr(c, name)) for c in (marquee.Client, marquee.AsyncClient))
        assert [(p.name, p.kind, p.default) for p in sync.parameters.values()] == [
            (p.name, p.kind, p.default) for p in async_.parameters.values()
        ], name
    assert inspect.signature(marquee.Client.__init__) == inspect.signature(marquee.AsyncClient.__init__)


def test_every_public_method_is_tested() -> None:
    sources = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    for name in public_methods(marquee.Client):
        assert re.search(rf"\bclient\.{name}\(", sources), f"Client.{name} is not tested"
        assert re.search(rf"\baclient\.{name}\(", sources), f"AsyncClient.{name} is not tested"


def test_public_items_are_documented() -> None:
    for name in marquee.__all__:
        item = getattr(marquee, name)
        # The protobuf messages are documented in proto/marquee/v1.
        if (inspect.isclass(item) or inspect.isfunction(item)) and not item.__module__.startswith("marquee.v1"):
            assert item.__doc__, name
    for cls in (marquee.Client, marquee.AsyncClient, marquee.Stream, marquee.AsyncStream):
        for method in public_methods(cls):
            assert getattr(cls, method).__doc__, f"{cls.__name__}.{method}"
