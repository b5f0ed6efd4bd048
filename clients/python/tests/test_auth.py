"""Bearer tokens against a server with ``[auth]`` tokens."""

from __future__ import annotations

import asyncio

import pytest
from conftest import Server, minilm_dir

import marquee


def test_tokens_are_required_and_checked(auth_server: Server) -> None:
    for token in (None, "wrong-secret"):
        with marquee.Client(auth_server.grpc, token=token, timeout=30) as client:
            with pytest.raises(marquee.Unauthenticated):
                client.list_models()
            with pytest.raises(marquee.Unauthenticated):
                client.embed("hello")
    with marquee.Client(f"http://{auth_server.grpc}", token="user-secret", timeout=30) as user:
        assert [m.name for m in user.list_models()] == ["minilm"]
        assert user.embed("hello").shape == (1, 384)
        user.create_collection("guarded", 384)
        with pytest.raises(marquee.PermissionDenied):
            user.delete_collection("guarded")
        with pytest.raises(marquee.PermissionDenied):
            user.load_model("again", str(minilm_dir()))
        with pytest.raises(marquee.PermissionDenied):
            user.unload_model("minilm")
    with marquee.Client(auth_server.grpc, token="admin-secret", timeout=30) as admin:
        admin.delete_collection("guarded")
        assert admin.list_collections() == []


def test_async_tokens(auth_server: Server) -> None:
    async def run() -> None:
        async with marquee.AsyncClient(auth_server.grpc, timeout=30) as anonymous:
            with pytest.raises(marquee.Unauthenticated):
                await anonymous.list_models()
        async with marquee.AsyncClient(auth_server.grpc, token="user-secret", timeout=30) as user:
            assert (await user.embed(["hello"])).shape == (1, 384)

    asyncio.run(run())


def test_tokens_are_checked_before_sending() -> None:
    for bad in ("", "two words", "line\nbreak", "naïve"):
        with pytest.raises(ValueError):
            marquee.Client("127.0.0.1:50051", token=bad)
