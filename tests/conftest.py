"""Shared test fixtures: paths to the bundled test data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def _import_datumaro_keeping_pandas() -> None:
    """Datumaro (the CVAT exports' reader) replaces ``sys.modules["pandas"]`` with a lazy
    re-import of pandas when it is imported, even when pandas is loaded already; in the same
    process Dask then fails (``module 'pandas' has no attribute 'core'``). Import it once, here,
    and put the real pandas back: Datumaro keeps its own reference, everything else the real one."""
    try:
        import pandas
    except ImportError:
        return
    try:
        import datumaro  # noqa: F401
    except ImportError:
        pass
    finally:
        sys.modules["pandas"] = pandas


_import_datumaro_keeping_pandas()

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = REPO_ROOT / "tests" / "data"
SAMPLE_VIDEOS = REPO_ROOT / "samples" / "videos"
EDGE_VIDEOS = TEST_DATA / "videos_edge"


@pytest.fixture(scope="session")
def sample_videos_dir() -> Path:
    return SAMPLE_VIDEOS


@pytest.fixture(scope="session")
def edge_videos_dir() -> Path:
    return EDGE_VIDEOS
