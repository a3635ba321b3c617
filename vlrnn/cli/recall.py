"""The recall task of ``vlrnn demo`` (and ``examples/long_memory.py``): exact BPTT learns
an answer that lies further back than any truncation window, truncated BPTT cannot.

A cue, one of ``K`` classes, is shown once (a one-hot pulse of height 10 on ``K`` cue
channels) at a random step among the first 10. Then come ``delay`` steps of distraction,
standard Gaussian noise on 4 other channels. After the last step the model says which
class the cue was; a linear classifier reads the final hidden state of every layer.

* exact BPTT: ``vlrnn.block_loss(rnn, None, x, None, block_len=...)``, the loss on
  ``out.state`` backpropagated through every step, in memory of one block;
* truncated BPTT with a window of ``window`` steps: the state carried forward but
  detached between windows, so the gradient of the answer reaches back ``window`` steps
  only, and never to the cue.

Both start from the same "chrono" initialisation of the gates (Tallec & Ollivier, 2018),
which gives some units time constants up to ``delay``; with PyTorch's default
initialisation the memory of the cue fades within a few dozen steps, and neither learns.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from ..engine._bptt import block_loss

__all__ = ["K", "NOISE", "Recall", "accuracy", "chrono_init", "exact_step", "make_batch", "train",
           "truncated_step"]

K = 4            # classes
NOISE = 4        # distractor channels
CUE = 10.0       # height of the cue pulse (the noise has standard deviation 1)
CUE_WINDOW = 10  # the cue appears at a random step in [0, CUE_WINDOW)
VAL_SEED = 12345  # the held-out sequences are the same for every run


def make_batch(n: int, delay: int, gen: torch.Generator, balanced: bool = False
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``x`` ``(T, n, K + NOISE)`` time-major with ``T = delay + CUE_WINDOW``, and the
    labels ``(n,)``. ``balanced``: every class equally often (``n`` a multiple of ``K``),
    so that any constant answer scores exactly chance."""
    T = delay + CUE_WINDOW
    x = torch.zeros(T, n, K + NOISE)
    x[:, :, K:] = torch.randn(T, n, NOISE, generator=gen)
    if balanced:
        label = (torch.arange(n) % K)[torch.randperm(n, generator=gen)]
    else:
        label = torch.randint(0, K, (n,), generator=gen)
    t0 = torch.randint(0, CUE_WINDOW, (n,), generator=gen)
    x[t0, torch.arange(n), label] = CUE
    return x, label


def chrono_init(rnn: nn.RNNBase, t_max: int, gen: torch.Generator) -> None:
    """Gate biases with time constants spread up to ``t_max`` steps (Tallec & Ollivier).

    LSTM (gates i, f, g, o): forget bias ``b ~ log(U(1, t_max - 1))``, input bias ``-b``.
    GRU (gates r, z, n; ``h' = (1 - z) n + z h``): update bias ``b``.
    """
    H = rnn.hidden_size
    with torch.no_grad():
        for layer in range(rnn.num_layers):
            b_ih = getattr(rnn, f"bias_ih_l{layer}")
            b_hh = getattr(rnn, f"bias_hh_l{layer}")
            b = torch.log(torch.empty(H).uniform_(1, t_max - 1, generator=gen))
            b_ih.zero_()
            b_hh.zero_()
            b_ih[H:2 * H] = b               # LSTM forget gate / GRU update gate
            if isinstance(rnn, nn.LSTM):
                b_ih[:H] = -b               # LSTM input gate


class Recall(nn.Module):
    """``nn.LSTM``/``nn.GRU`` plus a linear classifier on the final state of every layer."""

    def __init__(self, cell: str, layers: int, hidden: int, delay: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell](K + NOISE, hidden, num_layers=layers)
        chrono_init(self.rnn, delay, torch.Generator().manual_seed(seed))
        self.head = nn.Linear(layers * hidden, K)

    def classify(self, state) -> torch.Tensor:
        h = state[0] if isinstance(state, tuple) else state      # (layers, B, H)
        return self.head(h.permute(1, 0, 2).reshape(h.shape[1], -1))


def _detach(state):
    return tuple(t.detach() for t in state) if isinstance(state, tuple) else state.detach()


def exact_step(model: Recall, x: torch.Tensor, label: torch.Tensor, block_len: int
               ) -> torch.Tensor:
    """Exact BPTT through the whole sequence, one block of activations at a time."""
    out = block_loss(model.rnn, None, x, None, block_len=block_len)
    loss = nn.functional.cross_entropy(model.classify(out.state), label)
    loss.backward()
    return loss


def truncated_step(model: Recall, x: torch.Tensor, label: torch.Tensor, window: int
                   ) -> torch.Tensor:
    """Truncated BPTT: windows of ``window`` steps, the state carried forward but detached
    between windows. Only the last window holds a loss (the answer is due at the last
    step), so only it is backpropagated, through its own ``window`` steps and no further;
    the earlier windows run without a graph (no gradient could come from them anyway)."""
    state, loss = None, None
    T = x.shape[0]
    for start in range(0, T, window):
        last = start + window >= T
        with torch.set_grad_enabled(last):
            _, state = model.rnn(x[start:start + window], state)
        if last:
            loss = nn.functional.cross_entropy(model.classify(state), label)
            loss.backward()
        state = _detach(state)
    assert loss is not None
    return loss


@torch.no_grad()
def accuracy(model: Recall, x: torch.Tensor, label: torch.Tensor, block_len: int,
             batch_size: int) -> float:
    """Held-out accuracy, streamed block by block (no graph)."""
    correct = 0
    for i in range(0, x.shape[1], batch_size):
        out = block_loss(model.rnn, None, x[:, i:i + batch_size], None, block_len=block_len)
        correct += int((model.classify(out.state).argmax(-1) == label[i:i + batch_size]).sum())
    return correct / x.shape[1]


def train(method: str, *, cell: str = "lstm", layers: int = 1, hidden: int = 32,
          delay: int = 1000, window: int = 100, block_len: int = 250, batch_size: int = 32,
          batches: int = 20, epochs: int = 4, lr: float = 1e-2, n_val: int = 512,
          seed: int = 0, on_epoch: Optional[Callable[[int, float], None]] = None
          ) -> Dict[str, object]:
    """Train one model with ``method`` (``"exact"`` or ``"truncated"``) on the same
    batches either way; returns ``accs`` (held-out accuracy after each epoch, on
    balanced classes), ``acc`` (the last) and ``seconds``."""
    if method not in ("exact", "truncated"):
        raise ValueError(f"method must be 'exact' or 'truncated', got {method!r}")
    model = Recall(cell, layers, hidden, delay, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed + 1)          # the same batches both ways
    x_val, y_val = make_batch(n_val, delay, torch.Generator().manual_seed(VAL_SEED),
                              balanced=n_val % K == 0)
    accs: List[float] = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        for _ in range(batches):
            x, label = make_batch(batch_size, delay, gen)
            opt.zero_grad(set_to_none=True)
            if method == "exact":
                exact_step(model, x, label, block_len)
            else:
                truncated_step(model, x, label, window)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        accs.append(accuracy(model, x_val, y_val, block_len, 128))
        if on_epoch is not None:
            on_epoch(epoch + 1, accs[-1])
    return {"method": method, "accs": accs, "acc": accs[-1],
            "seconds": time.perf_counter() - t0, "model": model}
