"""Shared test fixtures.

Real recorded data is read from one configurable place: ``MOONSTREAM_SHARED_DATA`` (default
``<repo>/../shared/data``). Tests that need it skip with a clear message where it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.s3server"]

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = Path(__file__).resolve().parent / "data"


def shared_data_dir() -> Path:
    return Path(os.environ.get("MOONSTREAM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder; skips the test where it is absent."""
    path = shared_data_dir()
    if not (path / "README.md").is_file():
        pytest.skip(f"shared data not found at {path} (set MOONSTREAM_SHARED_DATA to its folder)")
    return path


def shared_file(relative: str) -> Path:
    """One file of the shared data, or skip with the path that was looked for."""
    path = shared_data_dir() / relative
    if not path.is_file():
        pytest.skip(f"shared data file {path} is absent (set MOONSTREAM_SHARED_DATA)")
    return path
