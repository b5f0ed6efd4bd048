"""The committed stubs in ``src/marquee/v1`` are what ``generate_stubs.py`` writes now."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "generate_stubs.py"


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate_stubs", SCRIPT)
    assert spec is not None and spec.loader is not None
    generate_stubs = importlib.util.module_from_spec(spec)
    sys.modules["generate_stubs"] = generate_stubs
    spec.loader.exec_module(generate_stubs)
    try:
        generate_stubs.generate(tmp_path / "v1")
    except RuntimeError as e:
        pytest.fail(str(e))
    differences = generate_stubs.compare(tmp_path / "v1", generate_stubs.PACKAGE_DIR)
    assert not differences, "stale stubs: run python clients/python/generate_stubs.py\n" + "\n".join(differences)
