"""Iterators over gRPC streams that raise :class:`marquee.MarqueeError`, and request
iterators that keep the caller's exceptions out of gRPC's request-sending machinery."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Generic,
    Iterable,
    Iterator,
    Optional,
    Type,
    TypeVar,
    Union,
)

import grpc
import grpc.aio

from .errors import Cancelled, MarqueeError, from_rpc_error

T = TypeVar("T")
R = TypeVar("R")


class RequestGuard(Generic[T]):
    """Wraps the requests of a client-streaming call.

    gRPC reads request iterators on a thread (or task) of its own and answers an
    exception there by logging it and failing the call with a generic status. The guard
    instead keeps the exception, cancels the call (once known) and ends the requests, so
    that the client raises the caller's own exception when the call ends.
    """

    def __init__(self, requests: Union[Iterable[T], AsyncIterable[T]]) -> None:
        self._iterator: Optional[Iterator[T]] = None
        self._aiterator: Optional[AsyncIterator[T]] = None
        if isinstance(requests, AsyncIterable):
            self._aiterator = requests.__aiter__()
        else:
            self._iterator = iter(requests)
        self.error: Optional[Exception] = None
        """The exception the requests raised, if any."""
        self.call: Optional[Any] = None
        """The call to cancel on such an exception; set once the call exists."""

    def __iter__(self) -> Iterator[T]:
        """The requests, for a blocking call (from a synchronous iterable)."""
        return self

    def __next__(self) -> T:
        assert self._iterator is not None
        if self.error is not None:
            raise StopIteration
        try:
            return next(self._iterator)
        except StopIteration:
            raise
        except Exception as e:
            self._fail(e)
            raise StopIteration from None

    def __aiter__(self) -> AsyncIterator[T]:
        """The requests, for an asyncio call (from a synchronous or asynchronous iterable)."""
        return self

    async def __anext__(self) -> T:
        if self.error is not None:
            raise StopAsyncIteration
        try:
            if self._aiterator is not None:
                return await self._aiterator.__anext__()
            assert self._iterator is not None
            return next(self._iterator)
        except (StopIteration, StopAsyncIteration):
            raise StopAsyncIteration from None
        except Exception as e:
            self._fail(e)
            raise StopAsyncIteration from None

    def _fail(self, error: Exception) -> None:
        self.error = error
        if self.call is not None:
            self.call.cancel()

    def raise_error(self) -> None:
        """Raises the requests' exception, if they raised one."""
        if self.error is not None:
            raise self.error


class Stream(Generic[R]):
    """The messages of a streaming call, as an iterator.

    Iterating raises :class:`marquee.MarqueeError` when the call fails. Use it as a
    context manager, or call :meth:`cancel`, to end the call before its last message
    (for a generation, this stops it on the server at once).
    """

    def __init__(self, call: Any, convert: Callable[[Any], R], guard: Optional[RequestGuard[Any]] = None) -> None:
        self._call = call
        self._convert = convert
        self._guard = guard

    def __iter__(self) -> Stream[R]:
        return self

    def __next__(self) -> R:
        error = None
        try:
            message = next(self._call)
        except StopIteration:
            message = None
        except grpc.RpcError as e:
            error = from_rpc_error(e)
            error.__cause__ = e
        if self._guard is not None:
            self._guard.raise_error()
        if error is not None:
            raise error
        if message is None:
            raise StopIteration
        return self._convert(message)

    def cancel(self) -> None:
        """Cancels the call; iterating afterwards raises :class:`marquee.Cancelled`."""
        self._call.cancel()

    def __enter__(self) -> Stream[R]:
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.cancel()


class AsyncStream(Generic[R]):
    """The messages of a streaming call, as an asynchronous iterator.

    Iterating raises :class:`marquee.MarqueeError` when the call fails. Use it as an
    asynchronous context manager, or call :meth:`cancel`, to end the call before its
    last message (for a generation, this stops it on the server at once).
    """

    def __init__(self, call: Any, convert: Callable[[Any], R], guard: Optional[RequestGuard[Any]] = None) -> None:
        self._call = call
        self._convert = convert
        self._guard = guard
        self._cancelled = False

    def __aiter__(self) -> AsyncStream[R]:
        return self

    async def __anext__(self) -> R:
        error: Optional[MarqueeError] = None
        try:
            message = await self._call.read()
        except grpc.RpcError as e:
            error = from_rpc_error(e)
            error.__cause__ = e
            message = grpc.aio.EOF
        except asyncio.CancelledError:
            # grpc.aio reports a cancelled call so; only ours become errors, a cancelled
            # task stays cancelled.
            if self._guard is not None:
                self._guard.raise_error()
            if not self._cancelled:
                raise
            error = Cancelled(Cancelled.code, "the call was cancelled by the client")
            message = grpc.aio.EOF
        if self._guard is not None:
            self._guard.raise_error()
        if error is not None:
            raise error
        if message is grpc.aio.EOF:
            raise StopAsyncIteration
        return self._convert(message)

    def cancel(self) -> None:
        """Cancels the call; iterating afterwards raises :class:`marquee.Cancelled`."""
        self._cancelled = True
        self._call.cancel()

    async def __aenter__(self) -> AsyncStream[R]:
        return self

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.cancel()
