"""Split a custom cell's step for ``StackedRNN(compile=True)``: what can run once per block,
what must run per step, and which ops touch the parameters.

A cell ``new_state = cell(x_t, state)`` is traced with ``torch.fx`` and cut in three:

- **pre** (hoisted): the nodes that depend on ``x_t`` and the parameters but not on the
  state (for an Elman cell ``ih(x_t)``). They run once on all ``N`` rows of the block.
- **rec** (per step): the rest, from the pre values and the state to the new state.
  It is also made to return its *taps* (the ops that read a parameter, for Elman
  ``hh(h)``) and the row inputs of those taps, so that the parameter gradients can be
  taken for all steps at once afterwards. Its parameters are detached aliases (same
  storage): the per-step graph has no edges to them.
- **param_fn**: the taps alone, fed with the row inputs of all steps stacked, computing
  with the real parameters (one batched vector-Jacobian product per block).

Every split is checked against the cell on a small random batch before it is used.
This needs a *row-wise* cell (each row of the batch computed on its own, parameters
shared); :func:`check_row_wise` refuses the others. A cell fx cannot trace is split the
trivial way (:func:`whole_cell_split`: nothing hoisted, the whole cell one tap).
"""
from __future__ import annotations

import copy
import operator
import typing
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CellSplit", "CannotSplit", "split_cell", "whole_cell_split", "check_row_wise",
           "check_no_batch_modules", "is_random_cell"]


class CannotSplit(Exception):
    """The cell cannot be split this way (the message says why)."""


# ops that draw random numbers: they stay per step (the draws keep the step loop's order)
_RANDOM_FUNCTIONS = {
    F.dropout, F.alpha_dropout, F.feature_alpha_dropout, F.dropout1d, F.dropout2d,
    F.dropout3d, F.rrelu, F.gumbel_softmax, torch.dropout, torch.bernoulli, torch.rand,
    torch.randn, torch.rand_like, torch.randn_like, torch.randint, torch.randint_like,
    torch.normal, torch.multinomial, torch.randperm, torch.poisson,
}
_RANDOM_METHODS = {"bernoulli", "bernoulli_", "uniform_", "normal_", "random_",
                   "exponential_", "geometric_", "cauchy_", "log_normal_"}
_RANDOM_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                   nn.FeatureAlphaDropout, nn.RReLU)
# modules that mix the rows of a batch: a batched call over all steps would change them
_BATCH_MODULES = (nn.modules.batchnorm._BatchNorm,)
_LIST = typing.List[torch.Tensor]


@dataclass
class CellSplit:
    """A cell cut for the compiled block path (see the module docstring).

    ``pre(x) -> [f_1..f_k]`` (``None``: the only pre value is ``x`` itself), each
    ``(N, ...)`` with the rows of ``x``; ``rec(fr, state) -> new_state + taps + tap_args``
    (lists of tensors, rows on dim 0; parameters detached); ``param_fn(tap_args) ->
    taps`` with the real parameters ``params``.
    """
    pre: Optional[Callable[[Tensor], List[Tensor]]]
    rec: nn.Module
    param_fn: Callable[[List[Tensor]], List[Tensor]]
    params: List[nn.Parameter]
    n_state: int
    n_frontier: int
    n_taps: int
    n_args: int
    hoisted: bool
    # per tap (module, index of its row input in tap_args) when every tap is an nn.Linear
    # call: the parameter gradients then come from two matmul-sized formulas, no
    # recomputed forward
    linear_taps: Optional[List[tuple]] = None


def aliased_copy(cell: nn.Module) -> nn.Module:
    """A copy of ``cell`` whose parameters are buffers aliasing the originals' storage
    (``p.detach()``) and whose buffers are the originals: it computes the same numbers,
    records no edges to the parameters, and sees in-place updates (an optimizer step)."""
    memo = {id(p): torch.empty(0) for p in cell.parameters()}  # skip copying the data
    twin = copy.deepcopy(cell, memo)
    originals = dict(cell.named_parameters())
    for name in list(originals):
        owner_name, _, leaf = name.rpartition(".")
        owner = twin.get_submodule(owner_name) if owner_name else twin
        if leaf in owner._parameters:
            del owner._parameters[leaf]
        owner.register_buffer(leaf, originals[name].detach(), persistent=False)
    for name, buf in cell.named_buffers():  # the same buffers, not copies
        owner_name, _, leaf = name.rpartition(".")
        (twin.get_submodule(owner_name) if owner_name else twin)._buffers[leaf] = buf
    return twin


def is_random_cell(cell: nn.Module, x: Tensor, state: List[Tensor], call) -> bool:
    """Whether two calls of ``cell`` on the same input differ (it draws random numbers)."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        a = call(cell, x, state)
        b = call(cell, x, state)
    return any(not torch.equal(u, v) for u, v in zip(a, b))


def check_no_batch_modules(cell: nn.Module) -> None:
    """``CannotSplit`` if ``cell`` contains a module known to mix the rows of a batch
    (checked before the cell is ever called: calling batch norm in training mode would
    also move its running statistics)."""
    for m in cell.modules():
        if isinstance(m, _BATCH_MODULES):
            raise CannotSplit(f"it contains {type(m).__name__}, which mixes the rows of a batch")


def check_row_wise(cell: nn.Module, x: Tensor, state: List[Tensor], call) -> None:
    """``CannotSplit`` unless the first rows of ``cell`` on a batch equal ``cell`` on those
    rows alone (batch statistics, a sum over the batch, ... fail)."""
    k = max(1, x.shape[0] // 2)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        full = call(cell, x, state)
        part = call(cell, x[:k], [s[:k] for s in state])
    for a, b in zip(full, part):
        if a.shape[1:] != b.shape[1:] or not torch.allclose(a[:k], b, rtol=1e-5, atol=1e-6):
            raise CannotSplit("its rows are not computed independently (the first rows of a "
                              "batch change when the other rows change)")


def _flat_nodes(args) -> List[fx.Node]:
    out: List[fx.Node] = []
    fx.node.map_arg(args, out.append)
    return out


def _is_random(gm: fx.GraphModule, n: fx.Node) -> bool:
    if n.op == "call_function":
        return n.target in _RANDOM_FUNCTIONS
    if n.op == "call_method":
        return n.target in _RANDOM_METHODS
    if n.op == "call_module":
        return isinstance(gm.get_submodule(n.target), _RANDOM_MODULES)
    return False


def _module_has_params(gm: fx.GraphModule, n: fx.Node) -> bool:
    return n.op == "call_module" and any(True for _ in gm.get_submodule(n.target).parameters())


def split_cell(cell: nn.Module, x: Tensor, state: List[Tensor], pair: bool, call) -> CellSplit:
    """Trace ``cell`` with fx and split it (module docstring); ``x`` ``(b, F)`` and
    ``state`` (one or two ``(b, H)`` tensors) are example rows. ``CannotSplit`` with the
    reason when fx cannot trace it or the pieces do not reproduce the cell."""
    try:
        gm = fx.symbolic_trace(cell)
    except Exception as err:  # fx raises many kinds; all mean "cannot trace"
        raise CannotSplit(f"torch.fx could not trace it ({str(err).strip().splitlines()[0]})"
                          ) from err
    nodes = list(gm.graph.nodes)
    ph = [n for n in nodes if n.op == "placeholder"]
    if len(ph) != 2:
        raise CannotSplit(f"its forward takes {len(ph)} arguments; expected (x, state)")
    x_node, s_node = ph
    # the state as separate tensors: the placeholder itself, or its [0] and [1]
    state_nodes: Dict[fx.Node, int] = {}
    if pair:
        for u in s_node.users:
            if u.op == "call_function" and u.target is operator.getitem \
                    and u.args[1] in (0, 1):
                state_nodes[u] = u.args[1]
            else:
                raise CannotSplit("its pair state is used other than as state[0] / state[1]")
    else:
        state_nodes[s_node] = 0
    try:
        from torch.fx.passes.shape_prop import ShapeProp
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            ShapeProp(gm).propagate(x, tuple(state) if pair else state[0])
    except Exception as err:
        raise CannotSplit(f"its traced graph did not run ({err})") from err
    rows = x.shape[0]

    def row_tensor(n: fx.Node) -> bool:
        meta = n.meta.get("tensor_meta")
        return hasattr(meta, "shape") and len(meta.shape) >= 1 and meta.shape[0] == rows

    # per node: depends on the state (or draws randomly), on x, on a parameter
    dep_s, dep_x, dep_p = set(), set(), set()
    for n in nodes:
        ins = _flat_nodes((n.args, n.kwargs))
        if n is s_node or n in state_nodes or _is_random(gm, n) or any(i in dep_s for i in ins):
            dep_s.add(n)
        if n is x_node or any(i in dep_x for i in ins):
            dep_x.add(n)
        if n.op == "get_attr" or _module_has_params(gm, n) or any(i in dep_p for i in ins):
            dep_p.add(n)
    hoist = set()
    for n in nodes:
        if n is x_node:
            hoist.add(n)
        elif n.op not in ("placeholder", "output") and n in dep_x and n not in dep_s \
                and row_tensor(n) and all(i in hoist for i in _flat_nodes((n.args, n.kwargs))
                                          if i in dep_x):
            hoist.add(n)
    # rec: every other node; hoisted nodes it reads become its inputs (the frontier)
    rec_g = fx.Graph()
    fr_ph = rec_g.placeholder("fr", type_expr=_LIST)
    st_ph = rec_g.placeholder("st", type_expr=_LIST)
    env: Dict[fx.Node, fx.Node] = {}
    frontier: List[fx.Node] = []
    taps: List[fx.Node] = []
    tap_args: List[fx.Node] = []

    def rec_arg(n: fx.Node) -> fx.Node:
        if n in env:
            return env[n]
        if n in hoist:
            frontier.append(n)
            env[n] = rec_g.call_function(operator.getitem, (fr_ph, len(frontier) - 1))
            env[n].meta = dict(n.meta)  # shapes, for the symbolic backward
            return env[n]
        raise CannotSplit(f"node {n.name} is used before it is computed")

    out_node = None
    for n in nodes:
        if n is x_node or n in hoist:
            continue
        if n is s_node:
            if not pair:
                env[n] = rec_g.call_function(operator.getitem, (st_ph, 0))
                env[n].meta = dict(n.meta)
            continue
        if n in state_nodes and pair:
            env[n] = rec_g.call_function(operator.getitem, (st_ph, state_nodes[n]))
            env[n].meta = dict(n.meta)
            continue
        if n.op == "output":
            out_node = n
            continue
        env[n] = rec_g.node_copy(n, rec_arg)
        row_ins = [i for i in _flat_nodes((n.args, n.kwargs)) if i in dep_s or i in dep_x]
        reads_param = _module_has_params(gm, n) or any(
            i in dep_p and i not in dep_s and i not in dep_x
            for i in _flat_nodes((n.args, n.kwargs)))
        if reads_param and row_ins:
            taps.append(n)
            for i in row_ins:
                if i not in tap_args:
                    tap_args.append(i)
        elif reads_param and n in dep_s | dep_x:
            raise CannotSplit(f"op {n.name} reads a parameter but no row input")
    result = out_node.args[0]
    outs = list(result) if isinstance(result, (tuple, list)) else [result]
    if len(outs) != (2 if pair else 1) or not all(isinstance(o, fx.Node) for o in outs):
        raise CannotSplit(f"it returns {len(outs)} values for a state of {2 if pair else 1}")
    if any(o not in dep_s for o in outs) or any(not row_tensor(t) for t in taps):
        raise CannotSplit("its new state does not depend on the state, or a parameter op "
                          "does not keep the rows")
    if not frontier:  # the step still needs the step's rows (their count)
        rec_arg(x_node)
    rec_g.output([rec_arg(o) for o in outs] + [env[t] for t in taps]
                 + [rec_arg(a) for a in tap_args])
    rec_gm = fx.GraphModule(aliased_copy(gm), rec_g)
    rec_gm.graph.eliminate_dead_code()
    rec_gm.recompile()

    # param_fn: the taps on stacked row inputs, with the real parameters
    p_g = fx.Graph()
    args_ph = p_g.placeholder("args", type_expr=_LIST)
    p_env: Dict[fx.Node, fx.Node] = {
        a: p_g.call_function(operator.getitem, (args_ph, k)) for k, a in enumerate(tap_args)}

    def p_arg(n: fx.Node) -> fx.Node:
        if n not in p_env:  # a parameter-only (or constant) ancestor of a tap
            if n in dep_s or n in dep_x:
                raise CannotSplit(f"tap input {n.name} is not recorded")
            p_env[n] = p_g.node_copy(n, p_arg)
        return p_env[n]
    p_g.output([p_g.node_copy(t, p_arg) for t in taps])
    param_gm = fx.GraphModule(gm, p_g)
    params = list(dict.fromkeys(p for p in param_gm.parameters()))

    pre_gm = None
    if frontier != [x_node]:
        pre_g = fx.Graph()
        x_ph = pre_g.placeholder("x")
        pre_env = {x_node: x_ph}

        def pre_arg(n: fx.Node) -> fx.Node:
            if n not in pre_env:
                pre_env[n] = pre_g.node_copy(n, pre_arg)
            return pre_env[n]
        pre_g.output([pre_arg(f) for f in frontier])
        pre_gm = fx.GraphModule(gm, pre_g)
    split = CellSplit(pre=pre_gm, rec=rec_gm, param_fn=param_gm, params=params,
                      n_state=len(outs), n_frontier=len(frontier), n_taps=len(taps),
                      n_args=len(tap_args), hoisted=pre_gm is not None,
                      linear_taps=_linear_taps(gm, taps, tap_args))
    _check_split(split, cell, x, state, call)
    return split


def _linear_taps(gm: fx.GraphModule, taps: List[fx.Node], tap_args: List[fx.Node]
                 ) -> Optional[List[tuple]]:
    out = []
    for t in taps:
        mod = gm.get_submodule(t.target) if t.op == "call_module" else None
        if type(mod) is not nn.Linear or len(t.args) != 1 or t.kwargs \
                or len((t.args[0].meta.get("tensor_meta") or SimpleNamespace(shape=())).shape) != 2:
            return None
        out.append((mod, tap_args.index(t.args[0])))
    return out


class _WholeCellTensor(nn.Module):
    """rec for a cell that fx cannot split: the whole cell per step, its new state the tap."""

    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell = cell

    def forward(self, fr: List[Tensor], st: List[Tensor]) -> List[Tensor]:
        h = self.cell(fr[0], st[0])
        return [h, h, fr[0], st[0]]


class _WholeCellPair(nn.Module):
    """:class:`_WholeCellTensor` for a pair state."""

    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell = cell

    def forward(self, fr: List[Tensor], st: List[Tensor]) -> List[Tensor]:
        h = self.cell(fr[0], (st[0], st[1]))
        # the taps must see only the uses outside the cell: the gradient captured at
        # h[1] itself would also hold its use inside the cell for h[0] (an LSTM's c)
        a, b = h[0].view_as(h[0]), h[1].view_as(h[1])
        return [a, b, a, b, fr[0], st[0], st[1]]


def whole_cell_split(cell: nn.Module, pair: bool) -> CellSplit:
    """The trivial split: nothing hoisted, the whole cell one tap (its new state), the
    parameter gradients from the cell called once on all steps' rows."""
    n = 2 if pair else 1

    def param_fn(args: List[Tensor]) -> List[Tensor]:
        out = cell(args[0], tuple(args[1:]) if pair else args[1])
        return list(out) if pair else [out]
    rec = (_WholeCellPair if pair else _WholeCellTensor)(aliased_copy(cell))
    return CellSplit(pre=None, rec=rec, param_fn=param_fn, params=list(cell.parameters()),
                     n_state=n, n_frontier=1, n_taps=n, n_args=1 + n, hoisted=False)


def _check_split(split: CellSplit, cell: nn.Module, x: Tensor, state: List[Tensor], call
                 ) -> None:
    """The pieces, run eagerly on the example rows, reproduce the cell (no random ops:
    with them only the shapes are compared)."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        seed = torch.seed()
        want = call(cell, x, state)
        torch.manual_seed(seed)
        fr = split.pre(x) if split.pre is not None else [x]
        res = split.rec(list(fr), list(state))
        got = res[:split.n_state]
        taps = split.param_fn(res[split.n_state + split.n_taps:])
    for a, b in zip(want, got):
        if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-6, atol=1e-7):
            raise CannotSplit("the split pieces do not reproduce the cell")
    for a, b in zip(res[split.n_state:split.n_state + split.n_taps], taps):
        if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-6, atol=1e-7):
            raise CannotSplit("its parameter ops do not reproduce on stacked rows")
