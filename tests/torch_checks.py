"""Shared pieces of the model and kernel tests (a plain module, not conftest: the GPU machine
runs some test files with --noconftest). Import a fixture by name into a test module and
pytest uses it there (the autouse ones apply to that module only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny matrices: one thread is faster, and two threads on a shared 2-core box thrash.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def nan_filled_allocations():
    """torch.empty returns NaN-filled memory while deterministic mode is on, so an output
    element nobody writes fails the NaN checks."""
    import torch.utils.deterministic as det

    old_fill, old_det = det.fill_uninitialized_memory, torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    det.fill_uninitialized_memory = True
    yield
    det.fill_uninitialized_memory = old_fill
    torch.use_deterministic_algorithms(old_det)


def rerun_under_interpreter(test_file: str, timeout: int, select: str = "") -> subprocess.CompletedProcess:
    """Run a test file again in a fresh process with TRITON_INTERPRET=1 (it must be set before
    Triton is imported), so a plain CPU `pytest` covers the kernel checks it holds; `select`
    narrows it to the tests a `-k` expression picks."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file,
                           *(["-k", select] if select else [])],
                          env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
