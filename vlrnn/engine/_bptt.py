"""Public entry points: ``block_loss``, ``block_backward``, ``block_outputs`` and the
plain-BPTT reference.

``block_loss`` replaces the forward pass of a recurrent model plus its loss;
``out.loss.backward()`` then runs the reverse block pass (:mod:`vlrnn.engine._backward`).
``block_outputs`` keeps the model's outputs instead, for any loss. ``full_loss``,
``full_backward`` and ``full_outputs`` compute the same with ordinary autograd (plain
BPTT): the oracle the engine is tested against.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple, Union

import torch
from torch import nn

from .._common import Batch
from ._backward import LossEngine, _BlockBPTT
from ._blocks import check_block_len
from ._call import BlockLossOutput, _Call
from ._directions import TimeReversed
from ._graph import graph_leaves, next_node_number, unique_tensors
from ._layout import Layout
from ._loss import LossFn, block_loss_value, finish_loss
from ._options import Options
from ._outputs import (
    OutputsEngine,
    apply_engines,
    as_output,
    join_outputs,
    prepare_engine,
    streamed_outputs,
)
from ._planner import plan
from ._schedules import Streaming
from ._state import assemble_final


def block_loss(model: nn.Module, loss_fn: Optional[LossFn], x: Batch, target: Optional[Batch], *,
               block_len: Union[int, str] = 256, state: Any = None, reduction: str = "mean",
               batch_first: Optional[bool] = None, state_batch_dim: Optional[int] = None,
               schedule: Optional[str] = None,
               memory_budget: Union[int, str, None] = None,
               offload: Optional[str] = None) -> BlockLossOutput:
    """Loss of a recurrent model over a long batch, whose backward is the exact BPTT
    gradient computed block by block in memory that does not grow with the length.

    Args:
        model: called as ``model(x_block, state) -> (y_block, new_state)`` once per block
            (``nn.LSTM``/``nn.GRU``/``nn.RNN`` work as they are).
        loss_fn: ``loss_fn(output_rows, target_rows) -> (R, ...)`` per-row losses
            (trailing dims summed), e.g. ``nn.MSELoss(reduction="none")``; ``None`` for no
            per-step loss.
        x: ``PackedSequence`` (sorted or ``enforce_sorted=False``) or dense ``(T, B, ...)``
            (``(B, T, ...)`` when batch-first).
        target: same layout and lengths as ``x``, or ``None``.
        block_len: time steps per block.
        state: initial state in the model's format and the caller's batch order;
            ``None`` lets the model start from zeros.
        reduction: ``"sum"``, ``"mean"`` (over valid rows) or ``"seq_mean"`` (mean over
            sequences of each sequence's mean row loss).
        batch_first: dense ``x`` is ``(B, T, ...)``; ``None`` follows ``model.batch_first``.
        state_batch_dim: batch dim of the state tensors; default 1 for ``nn.RNNBase``,
            else ``model.state_batch_dim``, else 0.
        schedule: which block boundaries to keep (:data:`vlrnn.SCHEDULES`):
            ``"flat"`` keeps all (one extra forward pass), ``"two_level"`` O(sqrt(K))
            of the K boundaries (two extra), ``"revolve"`` binomial checkpointing with
            ceil(log2 K) + 2 states (the fewest recomputations for its memory; a callable
            ``n_blocks -> Schedule`` such as ``vlrnn.engine.revolve_with(s)`` sets ``s``).
            ``None``: ``"flat"``, or the planner's choice with ``block_len="auto"``.
        memory_budget: bytes or a size (``"2GB"``) for the engine's working memory.
            With ``block_len="auto"`` (default budget: half the free memory) the
            planner (:func:`vlrnn.plan`) picks block length and schedule; with a fixed
            ``block_len`` it still uses what the budget leaves to keep the graphs of
            the last blocks instead of recomputing them.
        offload: ``"cpu"`` keeps the boundary states in (pinned) host memory and copies
            each back when the reverse pass needs it: GPU memory then holds one block,
            whatever the length. ``None`` keeps them where the model puts them.

    Returns:
        :class:`BlockLossOutput` with the differentiable ``loss`` and final ``state``
        (each sequence's state at its own last step, caller's batch order).

    Example (a loss on the final state may be added; the gradient stays exact):

    >>> import torch
    >>> from torch import nn
    >>> import vlrnn
    >>> lstm = nn.LSTM(3, 8)
    >>> x, y = torch.randn(100, 2, 3), torch.randn(100, 2, 8)
    >>> out = vlrnn.block_loss(lstm, nn.MSELoss(reduction="none"), x, y, block_len=32)
    >>> out.n_blocks
    4
    >>> h, c = out.state
    >>> (out.loss + h.pow(2).mean()).backward()   # reverse block pass; fills .grad
    >>> lstm.weight_hh_l0.grad.shape
    torch.Size([32, 8])
    """
    if block_len is None:  # (full_loss takes None: one call over the whole batch)
        raise TypeError("block_len must be a positive int or 'auto', got None")
    opts = Options(block_len=block_len, schedule=schedule, memory_budget=memory_budget,
                   offload=offload, reduction=reduction, batch_first=batch_first,
                   state_batch_dim=state_batch_dim)
    opts, keep_last = _configure(model, loss_fn, x, target, state, opts)
    call = _Call(model, loss_fn, x, target, state, opts)
    lay = call.layout
    runner = call.runner()
    n = len(runner.blocks)
    if not torch.is_grad_enabled():  # evaluation: stream the blocks, keep nothing
        total, _ = runner.run_no_grad(lay.x_data, lay.y_data, 0, n, runner.boundary[0], None)
        return call.output(finish_loss(total, lay.x_data), runner.final_state(), runner.spec)

    # Block 0 runs with a graph first: its graph names every tensor that needs a
    # gradient (parameters, and tensors a lambda loss_fn captured), which become the
    # Function's explicit inputs.
    x_grad = lay.x_data.requires_grad
    y_grad = lay.y_data is not None and lay.y_data.requires_grad
    state_grad = any(t.requires_grad for t in call.state0 or [])
    mark = next_node_number()
    snap = runner.snapshot()
    first = runner.run_with_graph(0, lay.x_data, lay.y_data, runner.boundary[0], x_grad, y_grad,
                                  state_grad)
    runner.keep_rng(0, snap)
    state1 = runner.advance(0, first.state_out)
    found, shared = graph_leaves([first.loss, *first.state_out], first.leaf_ids(), since=mark)
    params = unique_tensors(call.modules_params() + found)
    if not (params or x_grad or y_grad or state_grad):  # nothing to differentiate
        total, _ = runner.run_no_grad(lay.x_data, lay.y_data, 1, n, state1,
                                      None if first.loss is None else first.loss.detach())
        return call.output(finish_loss(total, lay.x_data), runner.final_state(), runner.spec)
    engine = LossEngine(runner, lay.x_data, lay.y_data, params, first, state1, retain=shared,
                        keep_last=keep_last)
    del first  # with more than one block its graph is not needed again
    state0 = call.state0 or []
    outs = _BlockBPTT.apply(engine, lay.x_data, lay.y_data, len(state0), *state0, *params)
    return call.output(outs[0], list(outs[1:]), runner.spec)


def _configure(model, loss_fn, x, target, state, opts: Options) -> Tuple[Options, int]:
    """``(opts with block_len and schedule fixed, keep_last)``: as given, or planned from
    the memory budget (``block_len="auto"`` or a ``memory_budget``)."""
    auto = opts.block_len == "auto"
    if not auto and opts.memory_budget is None:
        return opts.replace(schedule=opts.schedule or "flat"), 1
    if not torch.is_grad_enabled():  # streaming evaluation holds one block: no plan needed
        return opts.replace(block_len=1024 if auto else opts.block_len,
                            schedule=opts.schedule or "flat"), 1
    p = plan(model, x, None, opts.memory_budget if opts.memory_budget is not None else "auto",
             loss_fn=loss_fn, target=target, state=state, reduction=opts.reduction,
             batch_first=opts.batch_first, state_batch_dim=opts.state_batch_dim,
             schedule=opts.schedule,
             # not "auto": an int (Options refuses any other string)
             block_len=opts.block_len if isinstance(opts.block_len, int) else None)
    return opts.replace(block_len=p.block_len, schedule=p.schedule_arg()), p.keep_last


def block_backward(model: nn.Module, loss_fn: Optional[LossFn], x: Batch, target: Optional[Batch],
                   **options) -> BlockLossOutput:
    """``block_loss(...)`` followed by ``.loss.backward()``; returns the output with the
    loss detached. Parameter gradients accumulate into ``.grad`` as with
    ``loss.backward()``.

    >>> import torch
    >>> from torch import nn
    >>> import vlrnn
    >>> gru = nn.GRU(2, 4)
    >>> x, y = torch.randn(50, 3, 2), torch.randn(50, 3, 4)
    >>> out = vlrnn.block_backward(gru, nn.MSELoss(reduction="none"), x, y, block_len=16)
    >>> out.loss.requires_grad, gru.weight_ih_l0.grad is not None
    (False, True)
    """
    out = block_loss(model, loss_fn, x, target, **options)
    if out.loss.requires_grad:
        out.loss.backward()
    out.loss = out.loss.detach()
    return out


def block_outputs(model: nn.Module, x: Batch, *, block_len: int = 256, state: Any = None,
                  batch_first: Optional[bool] = None, state_batch_dim: Optional[int] = None,
                  schedule: Optional[str] = None, reverse: bool = False) -> Tuple[Batch, Any]:
    """The model's outputs over ``x`` and its final state, computed block by block.

    The same as ``model(x, state)`` in one call, in memory of the outputs plus the
    boundary states plus one block's activations. With grad enabled (and something to
    differentiate: the model's parameters, ``x`` or ``state``), ``y`` and the final
    state are differentiable: any function of them may be the loss, and its backward
    runs the reverse block pass, handing each block dL/dy of its rows and dL/dstate from
    the later block (exact, as plain autograd through ``model(x, state)``). Under
    ``torch.no_grad()`` the blocks are streamed and nothing but the outputs is kept.

    Args:
        model: called as ``model(x_block, state) -> (y_block, new_state)``
            (``nn.LSTM``/``nn.GRU``/``nn.RNN`` unidirectional; for bidirectional ones
            use :class:`vlrnn.Blockwise`).
        x: ``PackedSequence`` (sorted or ``enforce_sorted=False``) or dense ``(T, B, F)``
            (``(B, T, F)`` when batch-first).
        block_len: time steps per block.
        state: initial state in the model's format and the caller's batch order.
        batch_first, state_batch_dim: as in :func:`block_loss`.
        schedule: which boundaries the forward pass keeps (:data:`vlrnn.SCHEDULES`);
            ``None``: ``"flat"``.
        reverse: the model reads each sequence backwards, from its own last step to
            its first (the reverse direction of a bidirectional RNN): its blocks run
            last to first in ``x``'s time. ``y`` is still in ``x``'s time order, and
            ``final_state`` is each sequence's state after its first step.

    Returns:
        ``(y, final_state)``: ``y`` in ``x``'s layout (a ``PackedSequence`` with ``x``'s
        ``batch_sizes``/``sorted_indices``/``unsorted_indices``, or dense with ``x``'s
        time and batch dims); ``final_state`` each sequence's state after its own last
        step, in the caller's batch order.

    Example (a loss that couples all steps: softmax attention over time):

    >>> import torch
    >>> from torch import nn
    >>> import vlrnn
    >>> lstm = nn.LSTM(3, 6)
    >>> y, (h, c) = vlrnn.block_outputs(lstm, torch.randn(80, 2, 3), block_len=20)
    >>> w = torch.softmax(y.sum(-1), dim=0)           # (T, B) weights over time
    >>> (w.unsqueeze(-1) * y).sum(0).pow(2).sum().backward()
    >>> y.shape, lstm.weight_hh_l0.grad is not None
    (torch.Size([80, 2, 6]), True)
    """
    y, finals = joined_outputs([(model, state, reverse)], x, block_len=block_len,
                               batch_first=batch_first, state_batch_dim=state_batch_dim,
                               schedule=schedule)
    return as_output(y, x), finals[0]


def joined_outputs(runs: List[Tuple[nn.Module, Any, bool]], x: Batch, *, block_len: int,
                   batch_first: Optional[bool] = None, state_batch_dim: Optional[int] = None,
                   schedule: Optional[str] = None) -> Tuple[torch.Tensor, List[Any]]:
    """:func:`block_outputs` of several models over the same ``x`` (``runs``: one
    ``(model, state, reverse)`` each, e.g. the two directions of a bidirectional layer),
    their outputs joined along the last dim, through one autograd node: its backward
    adds every model's dL/dx into one buffer. Returns ``(y_data, [final state per
    run])``; ``y_data`` is ``x.data``'s rows for a ``PackedSequence``, else dense."""
    grad = torch.is_grad_enabled()
    opts = Options(block_len=check_block_len(block_len), schedule=schedule or "flat",
                   batch_first=batch_first, state_batch_dim=state_batch_dim)
    if not grad:  # stream, keeping no boundary states (nothing is ever recomputed)
        opts = opts.replace(schedule=Streaming)
    calls: List[_Call] = []
    engines: List[Optional[OutputsEngine]] = []
    for model, state, reverse in runs:
        call = _Call(model, None, x, None, state, opts)
        if reverse:
            assert isinstance(call.layout, Layout)  # as _Call built it
            call.layout = TimeReversed(call.layout)
        calls.append(call)
        if grad:
            engines.append(prepare_engine(call.runner(), call.layout.x_data, call.state0 or [],
                                          call.modules_params()))
    x_data = calls[0].layout.x_data
    ready = [e for e in engines if e is not None]
    finals: List[List[torch.Tensor]]
    if grad and len(ready) == len(engines):  # every run has an engine
        y, finals = apply_engines(ready, x_data)
        specs = [e.runner.spec for e in ready]
    else:  # nothing needs a gradient (or no grad mode): stream, keep only the outputs
        ys: List[torch.Tensor] = []
        finals, specs = [], []
        for call in calls:
            runner = call.runner()
            with torch.no_grad():
                y, final = streamed_outputs(runner, x_data)
            ys.append(y)
            finals.append(final)
            specs.append(runner.spec)
        y = ys[0] if len(ys) == 1 else torch.cat(ys, -1)
    return y, [c.output(None, f, spec).state for c, f, spec in zip(calls, finals, specs)]


def full_outputs(model: nn.Module, x: Batch, *, block_len: Optional[int] = None,
                 state: Any = None, batch_first: Optional[bool] = None,
                 state_batch_dim: Optional[int] = None, schedule: Optional[str] = None,
                 reverse: bool = False) -> Tuple[Batch, Any]:
    """The same as :func:`block_outputs` with plain autograd (the whole graph is kept):
    the reference. With ``block_len=None`` one call ``model(x, state)``; with
    ``block_len`` the model is called block by block exactly as the engine calls it
    (same shapes, same random draws), the states chained in the graph. ``reverse`` as in
    :func:`block_outputs`.

    >>> import torch
    >>> from torch import nn
    >>> import vlrnn
    >>> gru, x = nn.GRU(2, 4), torch.randn(30, 3, 2)
    >>> y_ref, h_ref = vlrnn.full_outputs(gru, x)
    >>> y, h = vlrnn.block_outputs(gru, x, block_len=8)
    >>> torch.allclose(y, y_ref, atol=1e-6), y.shape
    (True, torch.Size([30, 3, 4]))
    """
    opts = Options(block_len=block_len, schedule=schedule, batch_first=batch_first,
                   state_batch_dim=state_batch_dim)  # checked; the schedule changes nothing here
    if block_len is None and not reverse:
        return model(x, state)
    call = _Call(model, None, x, None, state, opts.replace(block_len=block_len or 2**62))
    if reverse:
        assert isinstance(call.layout, Layout)  # as _Call built it
        call.layout = TimeReversed(call.layout)
    lay = call.layout
    runner = call.runner()
    state_k = call.state0
    outs: List[torch.Tensor] = []
    enders: List[Optional[List[torch.Tensor]]] = []
    d = call.batch_dim
    for k, blk in enumerate(runner.blocks):
        _, out = runner.run(k, lay.part(lay.x_data, blk), None, state_k, with_loss=False,
                            outputs=outs)
        enders.append([t.narrow(d, blk.n_out, blk.n_in - blk.n_out) for t in out]
                      if blk.n_out < blk.n_in else None)
        state_k = [t.narrow(d, 0, blk.n_out) for t in out]
    y = join_outputs(lay, outs)
    return as_output(y, x), call.output(None, assemble_final(enders, d), runner.spec).state


def full_loss(model: nn.Module, loss_fn: Optional[LossFn], x: Batch, target: Optional[Batch], *,
              block_len: Optional[int] = None, state: Any = None, reduction: str = "mean",
              batch_first: Optional[bool] = None, state_batch_dim: Optional[int] = None,
              schedule: Optional[str] = None,
              memory_budget: Union[int, str, None] = None,
              offload: Optional[str] = None) -> BlockLossOutput:
    """The same loss as :func:`block_loss` with plain autograd (the whole graph is kept).

    With ``block_len=None`` the model is called once on the whole of ``x`` (state in the
    caller's order). With ``block_len`` it is called block by block exactly as the engine
    calls it (same shapes, same random draws), chaining the states in the graph.
    ``schedule``, ``memory_budget`` and ``offload`` are checked as :func:`block_loss`
    checks them (so both take the same arguments), and change nothing here: plain
    autograd keeps the whole graph. ``block_len="auto"`` means one call.

    >>> import torch
    >>> from torch import nn
    >>> import vlrnn
    >>> gru, x, y = nn.GRU(2, 4), torch.randn(30, 3, 2), torch.randn(30, 3, 4)
    >>> ref = vlrnn.full_loss(gru, nn.MSELoss(reduction="none"), x, y)      # plain autograd
    >>> out = vlrnn.block_loss(gru, nn.MSELoss(reduction="none"), x, y, block_len=8)
    >>> torch.allclose(ref.loss, out.loss)
    True
    """
    if block_len == "auto":
        block_len = None
    opts = Options(block_len=block_len, schedule=schedule, memory_budget=memory_budget,
                   offload=offload, reduction=reduction, batch_first=batch_first,
                   state_batch_dim=state_batch_dim)
    call = _Call(model, loss_fn, x, target, state, opts)
    if block_len is not None:
        return _full_blockwise(call)
    lay = call.layout
    whole = lay.whole()
    out = model(x, state)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError("model must return a pair (y, new_state) as nn.LSTM does")
    y, new_state = out
    loss = None
    if loss_fn is not None:
        tgt = None if lay.y_data is None else lay.rows(lay.part(lay.y_data, whole), whole)
        loss = block_loss_value(loss_fn, lay.output_rows(y, whole), tgt, lay, whole,
                                call.reduction)
    loss = loss if loss is not None else finish_loss(None, lay.x_data)
    return BlockLossOutput(loss, new_state, 1)


def _full_blockwise(call: _Call) -> BlockLossOutput:
    lay = call.layout
    runner = call.runner()
    state = call.state0
    total: Optional[torch.Tensor] = None
    enders: List[Optional[List[torch.Tensor]]] = []
    d = call.batch_dim
    for k, blk in enumerate(runner.blocks):
        y_part = None if lay.y_data is None else lay.part(lay.y_data, blk)
        loss, out = runner.run(k, lay.part(lay.x_data, blk), y_part, state)
        if loss is not None:
            total = loss if total is None else total + loss
        enders.append([t.narrow(d, blk.n_out, blk.n_in - blk.n_out) for t in out]
                      if blk.n_out < blk.n_in else None)
        state = [t.narrow(d, 0, blk.n_out) for t in out]
    return call.output(finish_loss(total, lay.x_data), assemble_final(enders, d), runner.spec)


def full_backward(model: nn.Module, loss_fn: Optional[LossFn], x: Batch, target: Optional[Batch],
                  **options) -> BlockLossOutput:
    """Plain BPTT: :func:`full_loss` then ``.loss.backward()``; the reference the engine
    must match. Returns the output with the loss detached.

    >>> import torch
    >>> from torch import nn
    >>> import vlrnn
    >>> torch.manual_seed(0) and None
    >>> rnn = nn.RNN(2, 3).double()
    >>> x, y = torch.randn(30, 2, 2).double(), torch.randn(30, 2, 3).double()
    >>> mse = nn.MSELoss(reduction="none")
    >>> _ = vlrnn.block_backward(rnn, mse, x, y, block_len=7)
    >>> exact = rnn.weight_hh_l0.grad.clone(); rnn.zero_grad()
    >>> _ = vlrnn.full_backward(rnn, mse, x, y)
    >>> torch.allclose(exact, rnn.weight_hh_l0.grad, rtol=1e-10)
    True
    """
    out = full_loss(model, loss_fn, x, target, **options)
    if out.loss.requires_grad:
        out.loss.backward()
    out.loss = out.loss.detach()
    return out
