"""Turns a target, TLS settings and a token into a channel's address, credentials and
call metadata; shared by the blocking and the asyncio client."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import grpc

PemSource = Union[str, "os.PathLike[str]", bytes]
"""PEM data as ``bytes``, or the path of a PEM file as ``str`` or ``os.PathLike``."""

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The largest message the clients send or accept (64 MiB), as the Rust client."""


@dataclass(frozen=True)
class TLSConfig:
    """TLS settings of a connection.

    Every field takes PEM bytes or the path of a PEM file. ``cert`` and ``key`` come
    together, for servers that require mutual TLS.
    """

    ca: Optional[PemSource] = None
    """CA certificate(s) the server's certificate must chain to; ``None``: gRPC's default roots."""
    cert: Optional[PemSource] = None
    """Client certificate chain."""
    key: Optional[PemSource] = None
    """Private key of ``cert``."""
    server_name: Optional[str] = None
    """Name to check the server's certificate against instead of the target's host."""


@dataclass(frozen=True)
class Connection:
    """Everything a client needs to open its channel and make calls."""

    address: str
    """The gRPC target without an ``http://`` or ``https://`` prefix."""
    credentials: Optional[grpc.ChannelCredentials]
    """TLS credentials, or ``None`` for a plaintext channel."""
    options: List[Tuple[str, Any]]
    """Channel arguments."""
    metadata: Tuple[Tuple[str, str], ...]
    """Metadata sent with every call (the bearer token)."""


def _pem(source: Optional[PemSource], what: str) -> Optional[bytes]:
    """PEM bytes from bytes or a file path."""
    if source is None or isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as e:
        raise ValueError(f"reading the {what} {os.fspath(source)}: {e.strerror}") from e


def connection(
    target: str,
    token: Optional[str],
    tls: Union[bool, TLSConfig, None],
    options: Sequence[Tuple[str, Any]],
) -> Connection:
    """Resolves a client's constructor arguments.

    ``https://`` targets and truthy ``tls`` use TLS; ``http://`` targets are plaintext
    and refuse TLS settings.
    """
    address = target
    secure = bool(tls)
    if target.startswith("https://"):
        if tls is False:
            raise ValueError(f"{target} is an https:// target; tls=False contradicts it")
        address, secure = target[len("https://") :].rstrip("/"), True
    elif target.startswith("http://"):
        if tls:
            raise ValueError(f"TLS settings need an https:// target or one without a scheme, not {target}")
        address = target[len("http://") :].rstrip("/")
    if not address:
        raise ValueError(f"no server address in target {target!r}")
    channel_options: List[Tuple[str, Any]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    credentials = None
    if secure:
        config = tls if isinstance(tls, TLSConfig) else TLSConfig()
        if (config.cert is None) != (config.key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_pem(config.ca, "CA certificate"),
            private_key=_pem(config.key, "client key"),
            certificate_chain=_pem(config.cert, "client certificate"),
        )
        if config.server_name:
            channel_options.append(("grpc.ssl_target_name_override", config.server_name))
    channel_options.extend(options)
    metadata: Tuple[Tuple[str, str], ...] = ()
    if token is not None:
        if not token or not token.isprintable() or not token.isascii() or any(c.isspace() for c in token):
            raise ValueError("the token must be non-empty printable ASCII without spaces")
        metadata = (("authorization", f"Bearer {token}"),)
    return Connection(address, credentials, channel_options, metadata)
