#!/usr/bin/env python3
"""Regenerates the protobuf and gRPC stubs of ``marquee.v1`` from ``proto/marquee/v1``.

The stubs are committed in ``src/marquee/v1/``. Run this script after changing a
``.proto`` file::

    pip install grpcio-tools==1.80.1
    python clients/python/generate_stubs.py

The output depends on the grpcio-tools version (its bundled protoc stamps the protobuf
version into every module, and the gRPC plugin the grpcio version), so the version is
pinned below; ``tests/test_stubs.py`` fails when the committed stubs differ from what this
script writes. grpcio-tools 1.80.1 is the newest release with wheels for Python 3.9; its
modules need ``protobuf>=6.31.1`` and ``grpcio>=1.80.1`` at run time (see pyproject.toml).

The proto package ``marquee.v1`` maps onto the Python package ``marquee.v1``, so the
imports protoc writes (``from marquee.v1 import embedding_pb2``) work unchanged once the
client is installed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

GRPCIO_TOOLS_VERSION = "1.80.1"
"""The grpcio-tools release the committed stubs are generated with."""

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
"""The repository's ``proto/`` directory (the import root of the .proto files)."""
PACKAGE_DIR = HERE / "src" / "marquee" / "v1"
"""Where the generated modules are committed."""

INIT = '''"""Generated protobuf messages and gRPC stubs of Marquee's ``marquee.v1`` API.

Written by ``clients/python/generate_stubs.py``; do not edit. Each ``.proto`` file
``proto/marquee/v1/NAME.proto`` becomes ``NAME_pb2`` (messages, with ``.pyi`` type stubs)
and ``NAME_pb2_grpc`` (service stubs).
"""
'''


def generate(out_dir: Path) -> None:
    """Writes the ``marquee.v1`` package (stubs and ``__init__.py``) into ``out_dir``.

    ``out_dir`` must not exist yet. Raises ``RuntimeError`` when grpcio-tools is missing,
    is not the pinned version, or protoc fails.
    """
    try:
        from grpc_tools import protoc
    except ImportError as e:
        raise RuntimeError(f"grpcio-tools is missing: pip install grpcio-tools=={GRPCIO_TOOLS_VERSION}") from e
    installed = version("grpcio-tools")
    if installed != GRPCIO_TOOLS_VERSION:
        raise RuntimeError(
            f"grpcio-tools {installed} is installed; the stubs are generated with "
            f"{GRPCIO_TOOLS_VERSION}: pip install grpcio-tools=={GRPCIO_TOOLS_VERSION}"
        )
    # Absolute file names, which protoc maps to their names under --proto_path
    # ("marquee/v1/embedding.proto"), whatever the working directory.
    protos = sorted(str(p) for p in (PROTO_ROOT / "marquee" / "v1").glob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files under {PROTO_ROOT / 'marquee' / 'v1'}")
    with tempfile.TemporaryDirectory() as tmp:
        include = Path(protoc.__file__).resolve().parent / "_proto"
        args = [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--proto_path={include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *protos,
        ]
        status = protoc.main(args)
        if status != 0:
            raise RuntimeError(f"protoc failed with status {status}")
        shutil.copytree(Path(tmp) / "marquee" / "v1", out_dir)
    (out_dir / "__init__.py").write_text(INIT, encoding="utf-8")


def main() -> int:
    """Regenerates ``src/marquee/v1`` in place, or with ``--check`` only compares."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed stubs differ from freshly generated ones"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "v1"
        generate(fresh)
        differences = compare(fresh, PACKAGE_DIR)
        if args.check:
            for line in differences:
                print(line, file=sys.stderr)
            return 1 if differences else 0
        if PACKAGE_DIR.exists():
            shutil.rmtree(PACKAGE_DIR)
        shutil.copytree(fresh, PACKAGE_DIR)
    print(f"wrote {PACKAGE_DIR}" + (f" ({len(differences)} files changed)" if differences else " (unchanged)"))
    return 0


def compare(fresh: Path, committed: Path) -> list[str]:
    """The differences between two generated trees, one line per file; empty when equal."""

    def files(root: Path) -> dict[str, bytes]:
        if not root.is_dir():
            return {}
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts
        }

    new, old = files(fresh), files(committed)
    lines = []
    for name in sorted(new.keys() | old.keys()):
        if name not in old:
            lines.append(f"missing: {name}")
        elif name not in new:
            lines.append(f"not generated any more: {name}")
        elif new[name] != old[name]:
            lines.append(f"stale: {name}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
