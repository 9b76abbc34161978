"""Test isolation for Accelerate: it keeps one process-wide state (device, mixed precision), and
refuses an ``Accelerator`` whose mixed precision differs from the first one made in the process.
Tests make Accelerators in-process with different settings (tests/test_clipping.py's fp16 one,
the runs' ``no``), so the state is cleared after each test, as Accelerate's own tests do."""

import sys

import pytest


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield
    if "accelerate" not in sys.modules:          # nothing to clear
        return
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture
def one_torch_thread():
    """torch on one CPU thread for the test (restored after it): runs compute alike."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
