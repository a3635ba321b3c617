import pytest
import torch

# Gradient comparisons are done in float64 on tiny models: one thread is fastest, and
# spinning OpenMP threads slow everything down badly when the 2 cores are shared.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
