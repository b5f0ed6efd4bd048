"""Runs the real ``marquee-server`` binary for the tests.

Environment:
    MARQUEE_SERVER_BIN: the server binary (default ``<repo>/target/release/marquee-server``);
        the plugin libraries are loaded from its directory.
    MARQUEE_TEST_MODEL_DIR: the all-MiniLM-L6-v2 directory (default
        ``<repo>/data/models/all-MiniLM-L6-v2``, fetched by ``scripts/fetch-model.sh``).
"""

from __future__ import annotations

import functools
import json
import os
import select
import subprocess
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

import pytest

# The tests fork (servers, openssl). gRPC's fork handlers restart its pollers in the
# child, where closing the inherited descriptors before exec can abort it; the tests
# never use gRPC in a child, so they switch the handlers off (before gRPC is imported).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import marquee  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
QWEN_FIXTURES = REPO / "plugins" / "qwen2-vl" / "tests" / "fixtures"
MINILM_REFERENCE = REPO / "plugins" / "bert-text" / "tests" / "fixtures" / "minilm_reference.json"
START_TIMEOUT_S = 60.0


def server_binary() -> Path:
    """The server binary under test."""
    path = Path(os.environ.get("MARQUEE_SERVER_BIN", REPO / "target" / "release" / "marquee-server"))
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it (cargo build --release --workspace) or set MARQUEE_SERVER_BIN")
    return path


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 model directory."""
    path = Path(os.environ.get("MARQUEE_TEST_MODEL_DIR", REPO / "data" / "models" / "all-MiniLM-L6-v2"))
    if not (path / "model.safetensors").is_file():
        pytest.fail(f"{path} has no model: run scripts/fetch-model.sh or set MARQUEE_TEST_MODEL_DIR")
    return path


@functools.lru_cache(maxsize=None)
def serves_http(binary: Path) -> bool:
    """Whether the server has an HTTP API (``--http-listen``), to put it on a free port too."""
    usage = subprocess.run([str(binary), "--help"], capture_output=True, text=True, check=True).stdout
    return "--http-listen" in usage


class Server:
    """A ``marquee-server`` process on free local ports, stopped by :meth:`stop`.

    Attributes:
        grpc: The gRPC address, ``127.0.0.1:PORT``.
        metrics: The metrics address.
        http: The HTTP address when the server printed one, else ``None``.
        log: The file its stderr goes to.
    """

    def __init__(self, args: Sequence[str], workdir: Path, env: Optional[Mapping[str, str]] = None) -> None:
        binary = server_binary()
        if serves_http(binary):
            args = ["--http-listen", "127.0.0.1:0", *args]
        self.log = workdir / "server.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MARQUEE_")}
        environment.update(env or {})
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen(
                [
                    str(binary),
                    "--listen",
                    "127.0.0.1:0",
                    "--metrics-listen",
                    "127.0.0.1:0",
                    "--plugin-dir",
                    str(binary.parent),
                    "--data-dir",
                    str(workdir / "data"),
                    *args,
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                env=environment,
            )
        fields = self._read_banner()
        self.grpc: str = fields["grpc"]
        self.metrics: str = fields["metrics"]
        self.http: Optional[str] = fields.get("http")

    def _read_banner(self) -> Dict[str, str]:
        """The ``key=value`` fields of the line the server prints once it listens."""
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], START_TIMEOUT_S)
        line = self._process.stdout.readline().decode() if ready else ""
        fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
        if "grpc" not in fields or "metrics" not in fields:
            self.stop()
            pytest.fail(f"the server did not start: {line!r}\n{self.log.read_text(errors='replace')}")
        return fields

    def begin_shutdown(self) -> None:
        """Sends SIGTERM without waiting: the server drains its calls, then exits."""
        self._process.terminate()

    def wait(self, timeout: float) -> int:
        """Waits for the process to exit; its exit status."""
        return self._process.wait(timeout)

    def stop(self) -> None:
        """Stops the process (SIGTERM, then SIGKILL after 10 s)."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """A temporary directory for the session's servers."""
    with tempfile.TemporaryDirectory(prefix="marquee-pytest-") as tmp:
        yield Path(tmp)


def start_server(workdir: Path, name: str, args: Sequence[str] = (), env: Optional[Mapping[str, str]] = None) -> Server:
    """Starts a server serving all-MiniLM-L6-v2 as ``minilm`` plus ``args``, in ``workdir/name``."""
    directory = workdir / name
    directory.mkdir()
    return Server(["--model", f"minilm={minilm_dir()}", *args], directory, env)


@pytest.fixture(scope="session")
def server(workdir: Path) -> Iterator[Server]:
    """The shared server: ``minilm`` (all-MiniLM-L6-v2, the default model) and ``tiny``
    (the tiny random Qwen2.5-VL generator fixture)."""
    s = start_server(workdir, "main", ["--model", f"tiny={QWEN_FIXTURES / 'tiny-nested'}"])
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[marquee.Client]:
    """A blocking client of the shared server."""
    with marquee.Client(server.grpc, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def auth_server(workdir: Path) -> Iterator[Server]:
    """A server with bearer tokens: ``user-secret`` (user) and ``admin-secret`` (admin)."""
    config = workdir / "auth.toml"
    config.write_text(
        textwrap.dedent(
            """\
            [auth]
            tokens = ["user-secret"]
            admin_tokens = ["admin-secret"]
            """
        )
    )
    s = start_server(workdir, "auth", ["--config", str(config)])
    yield s
    s.stop()


@pytest.fixture(scope="session")
def minilm_reference() -> Dict[str, Any]:
    """sentence-transformers' all-MiniLM-L6-v2 embeddings of 81 texts:
    ``{"dim", "max_seq_length", "items": [{"text", "tokens_untruncated", "embedding", ...}]}``."""
    return json.loads(MINILM_REFERENCE.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def qwen_expected() -> Dict[str, Any]:
    """transformers' greedy tokens for the tiny Qwen2.5-VL fixtures (``expected.json``)."""
    return json.loads((QWEN_FIXTURES / "expected.json").read_text())  # type: ignore[no-any-return]
