import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# The data-reference cache of the runs tests make stays out of the user's ~/.cache.
os.environ.setdefault("DUET_CACHE_DIR", tempfile.mkdtemp(prefix="duet-test-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402

# Tests use small tensors: one thread avoids oversubscription slowdowns on shared CPUs.
torch.set_num_threads(1)


@pytest.fixture
def gen():
    """A seeded CPU generator; every random draw in a test takes one explicitly."""
    return torch.Generator().manual_seed(1234)
