"""Shared test fixtures: paths to the bundled test data."""

from __future__ import annotations

from pathlib import Path

import pytest

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
