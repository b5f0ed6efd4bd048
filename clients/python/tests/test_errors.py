"""Statuses become the right exception classes, with the server's retry hints."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from pathlib import Path
from typing import Iterator, List

import grpc
import pytest
from conftest import Server, start_server

import marquee
from marquee.errors import error_for


def test_every_status_code_has_its_class() -> None:
    classes = {
        grpc.StatusCode.CANCELLED: marquee.Cancelled,
        grpc.StatusCode.UNKNOWN: marquee.Unknown,
        grpc.StatusCode.INVALID_ARGUMENT: marquee.InvalidArgument,
        grpc.StatusCode.DEADLINE_EXCEEDED: marquee.DeadlineExceeded,
        grpc.StatusCode.NOT_FOUND: marquee.NotFound,
        grpc.StatusCode.ALREADY_EXISTS: marquee.AlreadyExists,
        grpc.StatusCode.PERMISSION_DENIED: marquee.PermissionDenied,
        grpc.StatusCode.RESOURCE_EXHAUSTED: marquee.ResourceExhausted,
        grpc.StatusCode.FAILED_PRECONDITION: marquee.FailedPrecondition,
        grpc.StatusCode.ABORTED: marquee.Aborted,
        grpc.StatusCode.OUT_OF_RANGE: marquee.OutOfRange,
        grpc.StatusCode.UNIMPLEMENTED: marquee.Unimplemented,
        grpc.StatusCode.INTERNAL: marquee.Internal,
        grpc.StatusCode.UNAVAILABLE: marquee.Unavailable,
        grpc.StatusCode.DATA_LOSS: marquee.DataLoss,
        grpc.StatusCode.UNAUTHENTICATED: marquee.Unauthenticated,
    }
    for code, cls in classes.items():
        for given in (code, code.value[0]):
            error = error_for(given, "message")
            assert type(error) is cls and error.code == code and error.message == "message"
            assert isinstance(error, marquee.MarqueeError)
    assert type(error_for(99, "?")) is marquee.Unknown
    assert str(error_for(8, "queue full", 0.25)) == "RESOURCE_EXHAUSTED: queue full (retry after 0.25 s)"


def test_retry_hints_from_trailers() -> None:
    from marquee.errors import _retry_after, _RetryInfo, _Status

    assert _retry_after((("grpc-retry-pushback-ms", "1500"),)) == 1.5
    status = _Status(code=8, message="full")
    status.details.add(type_url="type.googleapis.com/google.rpc.ErrorInfo", value=b"\x0a\x01x")
    info = _RetryInfo()
    info.retry_delay.seconds, info.retry_delay.nanos = 2, 500_000_000
    status.details.add(type_url="type.googleapis.com/google.rpc.RetryInfo", value=info.SerializeToString())
    assert _retry_after((("grpc-status-details-bin", status.SerializeToString()),)) == 2.5
    assert _retry_after((("grpc-status-details-bin", b"\xff\xff"),)) is None
    assert _retry_after((("grpc-retry-pushback-ms", "soon"),)) is None
    assert _retry_after(()) is None


@pytest.fixture(scope="module")
def limited_server(workdir: Path) -> Iterator[Server]:
    """A server answering one call at a time."""
    config = workdir / "limited.toml"
    config.write_text(
        textwrap.dedent("""\
        [limits]
        max_concurrent_requests = 1
        """)
    )
    s = start_server(workdir, "limited", ["--config", str(config)])
    yield s
    s.stop()


def test_a_busy_server_gives_a_retry_hint(limited_server: Server) -> None:
    release = threading.Event()

    def requests() -> Iterator[List[str]]:
        yield ["holds the server's only call"]
        release.wait(30)

    with marquee.Client(limited_server.grpc, timeout=30) as client:
        stream = client.embed_stream(requests())
        first = next(stream)
        assert first.embeddings is not None  # the stream is now in progress
        with pytest.raises(marquee.ResourceExhausted) as refused:
            client.list_models()
        assert refused.value.retry_after == pytest.approx(0.1)
        trailers = dict(refused.value.trailing_metadata)
        assert "grpc-retry-pushback-ms" in trailers and "grpc-status-details-bin" in trailers
        release.set()
        assert list(stream) == []
        assert [m.name for m in client.list_models()] == ["minilm"]


def test_an_unreachable_server_is_unavailable() -> None:
    client = marquee.Client("127.0.0.1:1", timeout=5)
    with pytest.raises(marquee.Unavailable):
        client.list_models()
    client.close()

    async def run() -> None:
        aclient = marquee.AsyncClient("127.0.0.1:1", timeout=5)
        with pytest.raises(marquee.Unavailable):
            await aclient.list_models()
        await aclient.close()

    asyncio.run(run())
