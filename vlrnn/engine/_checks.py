"""Up-front checks of a call's arguments, so that a mistake is named before the first
block runs rather than by an error from deep inside torch."""
from __future__ import annotations

import torch
from torch import nn

from .._common import check_rnn_state
from ._layout import Layout


def check_torch_rnn(model, layout: Layout, state, leaves, batch_dim: int,
                     blockwise: bool) -> None:
    """For ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (also inside DDP), whose expectations are
    known: check ``x`` and the initial state before the first block, so that a mistake
    is named here rather than by a shape error deep inside the first call."""
    rnn = getattr(model, "module", model)
    if blockwise and getattr(rnn, "bidirectional", False) is True and \
            callable(getattr(rnn, "direction_view", None)):
        raise ValueError(f"{type(rnn).__name__}(bidirectional=True) cannot be run block by "
                         "block: its reverse direction reads the future, which a time block "
                         "does not hold. Wrap it in vlrnn.Blockwise(model, block_len=...) "
                         "and call that as the model (each direction runs block by block)")
    if not isinstance(rnn, nn.RNNBase):
        return
    name = type(rnn).__name__
    if blockwise and rnn.bidirectional:
        # the reverse direction at step t reads steps after t: cut into blocks, it would
        # see only the rest of its block, a different model (and loss) than on the whole
        raise ValueError(f"{name}(bidirectional=True) cannot be run block by block: its "
                         "backward direction reads the future, which a time block does not "
                         "hold. Wrap it in vlrnn.Blockwise(model, block_len=...) and call that as "
                         "the model (any loss on its outputs; each direction runs block by "
                         "block, the reverse one last-to-first), or use a unidirectional "
                         "model")
    x = layout.x_data
    want = "(N, input_size) rows of a PackedSequence" if layout.packed else (
        "(B, T, input_size)" if layout.batch_first else "(T, B, input_size)")
    n_dims = 2 if layout.packed else 3
    if x.dim() != n_dims or x.shape[-1] != rnn.input_size:
        raise ValueError(f"{name}(input_size={rnn.input_size}) expects x of shape {want}, "
                         f"got {'data ' if layout.packed else ''}shape {tuple(x.shape)}")
    dtype = next((p.dtype for p in rnn.parameters() if p.is_floating_point()), None)
    autocast = getattr(torch._C, "_is_any_autocast_enabled", lambda: False)()
    if autocast:  # autocast casts inside the kernels; torch skips this check too
        dtype = None
    if dtype is not None and x.dtype != dtype:
        # (packed input of another dtype fails inside torch's kernel without saying so)
        raise ValueError(f"x has dtype {x.dtype} but the weights of {name} have dtype "
                         f"{dtype}; convert x with x.to({dtype}) (a PackedSequence too) or "
                         f"the model with model.to({x.dtype})")
    if state is None:
        return
    if batch_dim != 1:
        raise ValueError(f"{name} keeps the batch on dim 1 of its state (layers, B, hidden); "
                         f"got state_batch_dim={batch_dim}")
    for i, t in enumerate(check_rnn_state(rnn, state, layout.n_batch)):
        if dtype is not None and t.dtype != dtype:
            raise ValueError(f"initial state of {name}: tensor {i} has dtype {t.dtype}, the "
                             f"model's weights {dtype}; convert it with .to({dtype})")
