"""The kernel checks of tests/test_kernels_gpu.py that a CPU-only run (CI) must cover too,
rerun under Triton's interpreter: the code paths the Hopper table can switch on by a flag
(expert and linear weights through tensor descriptors, the router split over its width).
The rest of that file runs on a GPU, or when TRITON_INTERPRET=1 is set for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from torch_checks import rerun_under_interpreter

HERE = Path(__file__).resolve().parent


@pytest.mark.skipif(torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") == "1",
                    reason="these checks run directly in this session (GPU or interpreter)")
def test_descriptor_and_split_router_checks_under_the_interpreter() -> None:
    # float32 only (dtype0): the half-precision cases repeat the same code paths
    done = rerun_under_interpreter(str(HERE / "test_kernels_gpu.py"), timeout=600,
                                   select="split_over_the_width or (descriptors and dtype0)")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout and "skipped" not in done.stdout
