"""Exceptions raised by :class:`marquee.Client` and :class:`marquee.AsyncClient`.

Every failed call raises a subclass of :class:`MarqueeError` chosen by its gRPC status
code, so callers can catch exactly what they handle::

    try:
        client.embed(["hello"], model="nope")
    except marquee.NotFound as e:
        print(e.message)            # 'model "nope" is not loaded (loaded: minilm, tiny)'
    except marquee.ResourceExhausted as e:
        time.sleep(e.retry_after or 1.0)

Arguments the client itself rejects before sending anything (a wrong type, an empty
batch size) raise the built-in ``TypeError`` or ``ValueError`` instead.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Type, Union

import grpc
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory
from google.protobuf.message import DecodeError

__all__ = [
    "MarqueeError",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
]

Metadata = Tuple[Tuple[str, Union[str, bytes]], ...]
"""gRPC metadata as (key, value) pairs; values of ``-bin`` keys are bytes."""


class MarqueeError(Exception):
    """A call failed with a gRPC status other than OK.

    Attributes:
        code: The gRPC status code.
        message: The server's message (or gRPC's, for transport failures).
        retry_after: Seconds to wait before retrying, when the server gave a hint
            (``RESOURCE_EXHAUSTED`` answers carry one); ``None`` otherwise.
        trailing_metadata: The call's trailing metadata, empty when there was none.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    """The status code a subclass stands for; an instance holds its call's code."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        retry_after: Optional[float] = None,
        trailing_metadata: Metadata = (),
    ) -> None:
        super().__init__(code, message, retry_after)
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.trailing_metadata = trailing_metadata

    def __str__(self) -> str:
        hint = f" (retry after {self.retry_after:g} s)" if self.retry_after is not None else ""
        return f"{self.code.name}: {self.message}{hint}"


class Cancelled(MarqueeError):
    """``CANCELLED``: the call was cancelled, usually by the client."""

    code = grpc.StatusCode.CANCELLED


class Unknown(MarqueeError):
    """``UNKNOWN``: an error without a more precise status."""

    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(MarqueeError):
    """``INVALID_ARGUMENT``: the request is malformed (wrong input kind, dimension, parameter...)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(MarqueeError):
    """``DEADLINE_EXCEEDED``: the call's timeout passed, or the server knew it could not finish in time."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(MarqueeError):
    """``NOT_FOUND``: an unknown model, collection, user, item, adapter or plugin."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MarqueeError):
    """``ALREADY_EXISTS``: a model, collection or adapter name already taken."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(MarqueeError):
    """``PERMISSION_DENIED``: the token may not call this RPC (admin RPCs need an admin token)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(MarqueeError):
    """``RESOURCE_EXHAUSTED``: a queue, the KV cache or a size limit is full; see ``retry_after``."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(MarqueeError):
    """``FAILED_PRECONDITION``: the server's state does not allow the call (e.g. a user with no high rating)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(MarqueeError):
    """``ABORTED``: the operation was aborted."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(MarqueeError):
    """``OUT_OF_RANGE``: a value past the valid range."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(MarqueeError):
    """``UNIMPLEMENTED``: the server does not implement the RPC."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(MarqueeError):
    """``INTERNAL``: a server-side bug or plugin failure."""

    code = grpc.StatusCode.INTERNAL


class Unavailable(MarqueeError):
    """``UNAVAILABLE``: the server cannot be reached or is shutting down; retrying elsewhere may work."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(MarqueeError):
    """``DATA_LOSS``: unrecoverable data loss or corruption."""

    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(MarqueeError):
    """``UNAUTHENTICATED``: no token, a malformed ``authorization`` header, or an unknown token."""

    code = grpc.StatusCode.UNAUTHENTICATED


_CLASSES: Dict[grpc.StatusCode, Type[MarqueeError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}
_BY_NUMBER: Dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def error_for(
    code: Union[grpc.StatusCode, int],
    message: str,
    retry_after: Optional[float] = None,
    trailing_metadata: Metadata = (),
) -> MarqueeError:
    """The exception for a status ``code`` (a ``grpc.StatusCode`` or its number).

    Unknown numbers and ``OK`` give a plain :class:`Unknown`.
    """
    if isinstance(code, int):
        code = _BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
    cls = _CLASSES.get(code, Unknown)
    if code not in _CLASSES:
        code = grpc.StatusCode.UNKNOWN
    return cls(code, message, retry_after, trailing_metadata)


def from_rpc_error(error: grpc.RpcError) -> MarqueeError:
    """Converts the error raised by a ``grpc`` or ``grpc.aio`` call into a :class:`MarqueeError`."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else None
    metadata = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    trailers: Metadata = tuple((m[0], m[1]) for m in (metadata or ()))
    return error_for(code, details or "", _retry_after(trailers), trailers)


def _retry_after(trailers: Sequence[Tuple[str, Union[str, bytes]]]) -> Optional[float]:
    """The retry hint in seconds from ``grpc-retry-pushback-ms``, else from a
    ``google.rpc.RetryInfo`` in ``grpc-status-details-bin``; ``None`` without either."""
    values = dict(trailers)
    pushback = values.get("grpc-retry-pushback-ms")
    if isinstance(pushback, (str, bytes)):
        try:
            milliseconds = int(pushback)
        except ValueError:
            milliseconds = -1
        if milliseconds >= 0:
            return milliseconds / 1000.0
    details = values.get("grpc-status-details-bin")
    if isinstance(details, bytes):
        return _retry_info_seconds(details)
    return None


def _google_rpc_classes() -> Tuple[Any, Any]:
    """``google.rpc.Status`` and ``google.rpc.RetryInfo`` message classes, built in a
    private descriptor pool so that they need no googleapis-common-protos and never clash
    with it."""
    pool = descriptor_pool.DescriptorPool()
    for dependency in (any_pb2, duration_pb2):
        pool.AddSerializedFile(dependency.DESCRIPTOR.serialized_pb)
    f = descriptor_pb2.FileDescriptorProto(
        name="marquee/_google_rpc.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/duration.proto"],
    )
    field = descriptor_pb2.FieldDescriptorProto
    status = f.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    status.field.add(
        name="details",
        number=3,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_REPEATED,
        type_name=".google.protobuf.Any",
    )
    retry = f.message_type.add(name="RetryInfo")
    retry.field.add(
        name="retry_delay",
        number=1,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_OPTIONAL,
        type_name=".google.protobuf.Duration",
    )
    pool.Add(f)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.RetryInfo")),
    )


_Status, _RetryInfo = _google_rpc_classes()
_RETRY_INFO_TYPE = "google.rpc.RetryInfo"


def _retry_info_seconds(status_bytes: bytes) -> Optional[float]:
    """The delay of the first ``RetryInfo`` detail of a serialized ``google.rpc.Status``."""
    status = _Status()
    try:
        status.ParseFromString(status_bytes)
    except DecodeError:  # a malformed detail is no hint, not an error of the call
        return None
    for detail in status.details:
        if detail.type_url.rsplit("/", 1)[-1] == _RETRY_INFO_TYPE:
            info = _RetryInfo()
            try:
                info.ParseFromString(detail.value)
            except DecodeError:
                return None
            delay = info.retry_delay
            return float(delay.seconds) + float(delay.nanos) / 1e9
    return None
