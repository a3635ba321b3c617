"""``vlrnn.memory``: the plain-BPTT memory estimate against plain BPTT measured in full."""
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import vlrnn.memory as mem

from helpers import ragged_batch

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="resident-memory counters are read from /proc")

# plain BPTT of a 2-layer LSTM(64) with a linear head over 16 x 3000 steps, float32,
# in one fresh process: the whole batch (measured) and the estimate from 2 prefixes
SCRIPT = textwrap.dedent("""
    import sys, torch
    from torch import nn
    import vlrnn, vlrnn.memory as mem
    torch.set_num_threads(1)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float32)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.LSTM(8, 64, num_layers=2), nn.Linear(64, 4)
        def forward(self, x, state=None):
            y, state = self.rnn(x, state)
            return self.head(y), state

    model, x, y = Net(), torch.randn(3000, 16, 8), torch.randn(3000, 16, 4)
    loss_fn = lambda out, tgt: (out - tgt).pow(2).sum(-1)
    if sys.argv[1] == "estimate":
        print(mem.plain_bptt_mb(model, loss_fn, x, y, min_mb=150, max_steps=1500))
    else:
        mem.release_free_memory()
        base = mem.rss_mb()
        vlrnn.full_loss(model, loss_fn, x, y).loss.backward()
        print(mem.peak_rss_mb() - base)
""")


def run_script(mode: str) -> float:
    res = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return float(res.stdout.split()[-1])


@linux_only
def test_estimate_matches_plain_bptt_measured_on_the_whole_batch():
    measured, estimate = run_script("measured"), run_script("estimate")
    assert measured > 100, f"the reference run should need real memory, got {measured:.0f} MB"
    assert 0.65 < estimate / measured < 1.5, (estimate, measured)


@linux_only
def test_peak_counter_resets_and_follows_allocations():
    assert mem.reset_peak_rss()
    before = mem.peak_rss_mb()
    assert before == pytest.approx(mem.rss_mb(), abs=2)
    big = torch.ones(40 * 2**20 // 8, dtype=torch.float64)  # 40 MiB, touched
    assert mem.peak_rss_mb() - before > 35
    del big


def small_model():
    torch.manual_seed(0)
    return nn.LSTM(3, 5, num_layers=2)


def test_leaves_grads_and_random_state_untouched():
    model = small_model()
    x, _ = ragged_batch([40, 25, 7], 3, 5, gen=torch.Generator().manual_seed(1))
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    rng = torch.get_rng_state()
    assert mem.plain_bptt_mb(model, None, x, start_steps=16) >= 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())


def test_packed_target_prefix_aligns_with_x():
    """A packed target is cut at the same rows as x (a misaligned cut would raise a
    size mismatch inside the loss)."""
    model = small_model()
    x, y = ragged_batch([30, 12, 9, 1], 3, 5, gen=torch.Generator().manual_seed(2))
    est = mem.plain_bptt_mb(model, lambda o, t: (o - t).pow(2).sum(-1), x, y, start_steps=10)
    assert est >= 0


@pytest.mark.parametrize("kwargs, target, match", [
    (dict(min_mb=0), None, "min_mb must be > 0, got 0"),
    (dict(start_steps=0), None, "start_steps must be an int >= 1, got 0"),
    (dict(max_steps=2.5), None, "max_steps must be an int >= 1, got 2.5"),
])
def test_bad_arguments(kwargs, target, match):
    x, _ = ragged_batch([5, 3], 3, 5)
    with pytest.raises(ValueError, match=match):
        mem.plain_bptt_mb(small_model(), None, x, target, **kwargs)


def test_packed_x_with_dense_target_is_refused():
    x, _ = ragged_batch([5, 3], 3, 5)
    with pytest.raises(TypeError, match="a packed x needs a packed target"):
        mem.plain_bptt_mb(small_model(), lambda o, t: o.sum(-1), x, torch.zeros(8, 5))


def test_model_without_trainable_parameters_is_refused():
    model = small_model().requires_grad_(False)
    with pytest.raises(ValueError, match="no parameters that require grad"):
        mem.plain_bptt_mb(model, None, torch.randn(6, 2, 3))


def test_dense_input_is_not_a_tensor():
    with pytest.raises(TypeError, match="x must be a PackedSequence or a dense tensor"):
        mem.plain_bptt_mb(small_model(), None, [1, 2, 3])
