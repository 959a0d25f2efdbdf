"""Shared fixtures. Tests that need the real datasets are marked ``realdata``; ./run test fetches
them first. Every other test runs against an empty, private cache."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

from widthlab._compat import ensure_torchvision_importable

# PyPI's torchvision is a CUDA build whose extension does not load into the CPU torch: define the
# operator schemas its import needs before any test imports torchvision, timm or transformers.
ensure_torchvision_importable()

# CI draws the same examples on every run (seeded by each test's name; a clean clone has no
# example database), so a red run is reproducible and never a draw of the day; the fuzz
# profile explores afresh
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
# the long fuzz runs (--hypothesis-profile fuzz -p no:timeout): tests/units/test_fuzz_graph.py
# and tests/data/test_fuzz_user_files.py
settings.register_profile("fuzz", max_examples=3000, deadline=None)
settings.load_profile("ci")

# The real cache is resolved once, before any test redirects WIDTHLAB_CACHE.
REAL_CACHE = os.environ.get("WIDTHLAB_CACHE") or os.path.expanduser("~/.cache/widthlab")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A fresh cache directory, with no user data directory set."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("WIDTHLAB_CACHE", str(cache))
    monkeypatch.delenv("WIDTHLAB_DATA", raising=False)
    return cache


@pytest.fixture
def real_cache(monkeypatch):
    """The user's cache holding the real, verified datasets."""
    monkeypatch.setenv("WIDTHLAB_CACHE", REAL_CACHE)
    monkeypatch.delenv("WIDTHLAB_DATA", raising=False)
    return REAL_CACHE


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: they gain nothing from threads, and on
    a busy 2-core machine torch's thread pool makes each step up to ~100x slower. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
