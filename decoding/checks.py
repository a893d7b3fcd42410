"""Input checks that do not stall a GPU.

Reading a tensor's value in Python (``.item()``, ``if t.any():``) makes the host wait for every
queued kernel: a synchronisation. On a CUDA device the checks of the per-step path are
therefore queued as device-side assertions (``torch._assert_async``), which fail the next
synchronising call instead of the current one; on a CPU there is no queue to drain, so the
check is a plain read and raises the given error with a message that can quote values.

Reads that remain in the per-step path, each because the algorithm needs the answer on the
host (``tests/test_syncs.py`` counts them): whether anything is masked (an empty step draws
nothing and costs nothing), whether the strategy revealed anything (else no forward), how many
rows to compute and to draw (the packed head's row selection, the sampler's row chunks), and,
for strategies that may reveal nothing, whether x changed since the last forward. DCD's
left-to-right drafting reads per position by design; transformers reads the attention mask
once per AR call. A denoiser KV cache (``decoding.cache_batch``) reads, per call, which rows
refresh or how many positions an exact call runs. The trace's counts and ESS are read once
per run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def device_check(ok: Tensor, message: str | Callable[[], str],
                 error: type[Exception] = ValueError) -> None:
    """Fail unless the 0-dim bool ``ok`` is True, without a host read on accelerators.

    ``message`` may be a callable, evaluated only on failure on a CPU (so it may read values).
    """
    if ok.device.type == "cpu":
        if not bool(ok):
            raise error(message() if callable(message) else message)
        return
    text = message if isinstance(message, str) else f"{error.__name__}: a device-side check failed"
    torch._assert_async(ok, text)


def not_any(mask: Tensor) -> Tensor:
    """A 0-dim bool tensor, True when ``mask`` holds no True (no host read)."""
    return ~mask.any()
