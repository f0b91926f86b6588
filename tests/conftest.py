import os
import sys
import tempfile

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
# measured choices (Winograd or direct, int8 runtime) go to a cache of this test session, not the user's
os.environ.setdefault("FEATX_CACHE_DIR", tempfile.mkdtemp(prefix="featx-test-cache-"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
