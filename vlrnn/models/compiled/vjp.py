"""A symbolic backward of a split cell's per-step part (``StackedRNN(compile=True)``).

The per-step part ``rec(fr, state) -> new_state + taps + tap_args`` (an fx graph of
torch-level ops, parameters as constants) is differentiated here op by op, once, into
a graph ``bwd(saved, g_new_state, go) -> g_fr + g_state + g_taps``: the vector-Jacobian
product with respect to the step's row inputs and the carried state, plus the
gradient reaching every tap (from which the parameter gradients are taken for all
steps at once). ``fwd`` is ``rec`` returning also the values ``bwd`` reads
(``saved``). Both are scripted: the reverse loop then runs a handful of kernels per
step in TorchScript, with no autograd graph and no autograd engine.

Rules exist for the ops small recurrent cells are made of: ``+ - * /``, ``neg``,
``tanh``, ``sigmoid``, ``relu``, ``exp``, ``nn.Linear`` / ``F.linear`` / ``@`` with a
constant (parameter) right side, ``nn.LayerNorm`` over the features, ``torch.cat`` and
``chunk`` over features. A cell with any other op on its state path raises
:class:`~.split.CannotSplit` (the caller then keeps autograd for the per-step
chain). Every derivative is checked against autograd on example rows before use.
:func:`~.fuse.fuse_linear` first rewrites ``nn.Linear`` calls as ``mm``/``addmm`` on a
transposed weight alias (``a + h W^T`` as one ``addmm``) and ``nn.LayerNorm`` as
``native_layer_norm`` (whose statistics the backward reads).
"""
from __future__ import annotations

import operator
import typing
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from .split import CannotSplit

__all__ = ["StepVJP", "build_vjp", "check_vjp"]

_LIST = typing.List[torch.Tensor]
_ADD = {operator.add, torch.add, "add"}
_SUB = {operator.sub, torch.sub, "sub"}
_MUL = {operator.mul, torch.mul, "mul"}
_DIV = {operator.truediv, torch.div, "div"}
_NEG = {operator.neg, torch.neg, "neg"}
_TANH = {torch.tanh, F.tanh, "tanh"}
_SIGMOID = {torch.sigmoid, F.sigmoid, "sigmoid"}
_RELU = {torch.relu, F.relu, "relu"}
_EXP = {torch.exp, "exp"}
_MATMUL = {operator.matmul, torch.matmul, torch.mm, "matmul", "mm"}
_CHUNK = {torch.chunk, "chunk"}
_LAYER_NORM = torch.ops.aten.native_layer_norm


def _item(n: fx.Node, k: int) -> fx.Node:
    """The ``getitem(n, k)`` node of a multi-output node (fuse_linear makes them)."""
    return next(u for u in n.users if _op(u) is operator.getitem and u.args[1] == k)


@dataclass
class StepVJP:
    """``fwd(fr, state) -> new_state + tap_args + saved`` (``n_saved`` values the backward
    reads) and ``bwd(saved, g_state, go) -> [g_fr for fr in fr_mask if set] + g_state +
    g_taps``, where ``go`` (the previous step's output gradient, rows of this step) is
    added to the gradient of ``state[0]``."""
    fwd: fx.GraphModule
    bwd: fx.GraphModule
    n_saved: int
    fr_mask: List[bool]


def _op(n: fx.Node):
    return n.target if n.op in ("call_function", "call_method") else None


def _shape(n) -> Optional[torch.Size]:
    meta = n.meta.get("tensor_meta") if isinstance(n, fx.Node) else None
    return getattr(meta, "shape", None)


def build_vjp(rec: fx.GraphModule, n_state: int, n_frontier: int, n_taps: int) -> StepVJP:
    """The symbolic backward of ``rec`` (module docstring); ``CannotSplit`` when an op on
    the state path has no rule here."""
    nodes = list(rec.graph.nodes)
    fr_ph, st_ph = [n for n in nodes if n.op == "placeholder"]
    out_node = nodes[-1]
    outs = list(out_node.args[0])
    state_out, taps = outs[:n_state], outs[n_state:n_state + n_taps]
    inputs: Dict[tuple, fx.Node] = {}
    for n in nodes:
        if _op(n) is operator.getitem and n.args[0] in (fr_ph, st_ph):
            inputs[("fr" if n.args[0] is fr_ph else "st", n.args[1])] = n
    active = set(inputs.values())
    for n in nodes:
        if n.op != "output" and any(i in active for i in _inputs(n)):
            active.add(n)

    bw = fx.Graph()
    saved_ph = bw.placeholder("saved", type_expr=_LIST)
    g_ph = bw.placeholder("g", type_expr=_LIST)
    go_ph = bw.placeholder("go")  # the previous step's output gradient (see below)
    saved: List[fx.Node] = []
    in_bw: Dict[fx.Node, fx.Node] = {}

    def val(a):
        """Forward value ``a`` inside the backward graph: a constant subgraph copied, an
        active value saved by the forward, a Python value as is."""
        if not isinstance(a, fx.Node):
            return a
        if a not in in_bw:
            if a in active:
                saved.append(a)
                in_bw[a] = bw.call_function(operator.getitem, (saved_ph, len(saved) - 1))
            else:
                in_bw[a] = bw.node_copy(a, val)
        return in_bw[a]

    grads: Dict[fx.Node, fx.Node] = {}
    pieces: Dict[fx.Node, Dict[int, fx.Node]] = {}

    def acc(a, g: fx.Node) -> None:
        if isinstance(a, fx.Node) and a in active:
            grads[a] = g if a not in grads else bw.call_function(operator.add, (grads[a], g))

    def call(fn, *args):
        return bw.call_function(fn, args)

    for k, o in enumerate(state_out):
        acc(o, call(operator.getitem, g_ph, k))
    tap_grads: Dict[fx.Node, fx.Node] = {}
    inputs_set = set(inputs.values())
    for n in reversed(nodes):
        if n.op in ("placeholder", "output") or n in inputs_set:
            continue
        if n in pieces and _op(n) is _LAYER_NORM:  # only the normalized output has one
            x, shape, w, b, _eps = n.args
            got = pieces.pop(n)
            mean, rstd = (val(_item(n, k)) for k in (1, 2))
            g_x = call(torch.ops.aten.native_layer_norm_backward, got[0], val(x), shape, mean,
                       rstd, val(w), val(b), [True, False, False])
            acc(x, call(operator.getitem, g_x, 0))
            continue
        if n in pieces:  # a chunk: its pieces' gradients side by side
            acc(n.args[0], _chunk_grad(n, pieces.pop(n), val, call))
            continue
        if n not in grads:
            if n in taps:
                raise CannotSplit(f"parameter op {n.name} does not reach the new state")
            continue
        g = grads[n]
        if n in taps:
            tap_grads[n] = g
        _rule(rec, bw, n, g, val, acc, call, pieces, active)

    fr_mask, out = [], []
    for k in range(n_frontier):
        node = inputs.get(("fr", k))
        fr_mask.append(node is not None and node in grads)
        if fr_mask[-1]:
            out.append(grads[node])
    for k in range(n_state):
        node = inputs.get(("st", k))
        out.append(grads[node] if node is not None and node in grads
                   else call(torch.zeros_like, call(operator.getitem, g_ph, k)))
    out += [tap_grads[t] for t in taps]
    # the state's gradient leaves with the previous step's output gradient added (that
    # output is state[0]): a matmul there becomes an addmm, one kernel less per step
    e = out[len(out) - n_taps - n_state]
    if _op(e) is torch.mm and not e.users and out.count(e) == 1:
        with bw.inserting_after(e):
            fused = bw.call_function(torch.addmm, (go_ph, e.args[0], e.args[1]))
        out[out.index(e)] = fused
        bw.erase_node(e)
    else:
        out[out.index(e)] = call(operator.add, e, go_ph)
    bw.output(out)
    bwd = fx.GraphModule(rec, bw)

    fw = fx.Graph()
    env: Dict[fx.Node, fx.Node] = {}
    fw.graph_copy(rec.graph, env)
    fw.output([env[o] for o in state_out] + [env[o] for o in outs[n_state + n_taps:]]
              + [env[s_] for s_ in saved])
    fwd = fx.GraphModule(rec, fw)
    return StepVJP(fwd=fwd, bwd=bwd, n_saved=len(saved), fr_mask=fr_mask)


def _inputs(n: fx.Node) -> List[fx.Node]:
    out: List[fx.Node] = []
    fx.node.map_arg((n.args, n.kwargs), out.append)
    return out


def _same_shape(x, n: fx.Node, active) -> None:
    """An active operand broadcast to the output's shape would need a sum: not here."""
    if isinstance(x, fx.Node) and x in active and _shape(x) != _shape(n):
        raise CannotSplit(f"op {n.name} broadcasts a value of the state path")


def _dim(n: fx.Node, pos: int, default: int, ndim: int) -> int:
    d = n.args[pos] if len(n.args) > pos else n.kwargs.get("dim", default)
    d = d + ndim if d < 0 else d
    if d == 0:
        raise CannotSplit(f"op {n.name} works across rows (dim 0)")
    return d


def _chunk_grad(n: fx.Node, piece_grads: Dict[int, fx.Node], val, call) -> fx.Node:
    metas = n.meta.get("tensor_meta")
    if not isinstance(metas, (tuple, list)):
        raise CannotSplit(f"chunk {n.name} has no shapes")
    users = {u.args[1]: u for u in n.users if _op(u) is operator.getitem}
    parts = []
    for i in range(len(metas)):
        if i in piece_grads:
            parts.append(piece_grads[i])
        elif i in users:
            parts.append(call(torch.zeros_like, val(users[i])))
        else:
            raise CannotSplit(f"chunk {n.name} has a piece never used")
    return call(torch.cat, parts, _dim(n, 2, 0, len(metas[0].shape)))


def _transposed(rec: fx.GraphModule, bw: fx.Graph, w: fx.Node, val, call) -> fx.Node:
    """``w.t()`` in the backward graph; the untransposed alias where fuse_linear made one."""
    names = getattr(rec, "_vlrnn_transposes", {})
    if w.op == "get_attr" and w.target in names:
        return bw.get_attr(names[w.target])
    return call(torch.t, val(w))


def _rule(rec: fx.GraphModule, bw: fx.Graph, n: fx.Node, g: fx.Node, val, acc, call,
          pieces, active) -> None:
    """Add ``n``'s input gradients (``g`` reaching its output) to the backward graph."""
    t = _op(n)
    a = n.args
    if n.op == "call_module":
        mod = rec.get_submodule(n.target)
        if type(mod) is nn.Linear and len(a) == 1 and not n.kwargs:
            acc(a[0], call(torch.matmul, g, bw.get_attr(f"{n.target}.weight")))
            return
        raise CannotSplit(f"no derivative rule here for module {type(mod).__name__}")
    kwargs = dict(n.kwargs)
    if t in _RELU or t is F.relu:
        kwargs.pop("inplace", None)
    if t in ({torch.cat} | _CHUNK):
        kwargs.pop("dim", None)
    if kwargs:
        raise CannotSplit(f"op {n.name} has keyword arguments {sorted(kwargs)}")
    if t is operator.getitem and (_op(a[0]) in _CHUNK or _op(a[0]) is _LAYER_NORM):
        pieces.setdefault(a[0], {})[a[1]] = g
    elif t in _ADD or t in _SUB:
        for x in a[:2]:
            _same_shape(x, n, active)
        acc(a[0], g)
        acc(a[1], g if t in _ADD else call(torch.neg, g))
    elif t in _MUL:
        for x, y in ((a[0], a[1]), (a[1], a[0])):
            _same_shape(x, n, active)
            if isinstance(x, fx.Node) and x in active:
                acc(x, call(torch.mul, g, val(y)))
    elif t in _DIV:
        x, y = a
        _same_shape(x, n, active)
        _same_shape(y, n, active)
        acc(x, call(torch.div, g, val(y)))
        if isinstance(y, fx.Node) and y in active:
            acc(y, call(torch.neg, call(torch.div, call(torch.mul, g, val(n)), val(y))))
    elif t in _NEG:
        acc(a[0], call(torch.neg, g))
    elif t in _TANH:
        acc(a[0], call(torch.ops.aten.tanh_backward, g, val(n)))
    elif t in _SIGMOID:
        acc(a[0], call(torch.ops.aten.sigmoid_backward, g, val(n)))
    elif t in _RELU:
        acc(a[0], call(torch.ops.aten.threshold_backward, g, val(n), 0))
    elif t in _EXP:
        acc(a[0], call(torch.mul, g, val(n)))
    elif t is torch.addmm:
        c, x, w = a
        _same_shape(c, n, active)
        acc(c, g)
        if isinstance(w, fx.Node) and w in active:
            raise CannotSplit(f"op {n.name}: only a constant right side is supported")
        acc(x, call(torch.mm, g, _transposed(rec, bw, w, val, call)))
    elif t in _MATMUL or t is F.linear:
        x, w = a[0], a[1]
        if isinstance(w, fx.Node) and w in active or len(_shape(w) or ()) != 2 \
                or (t is F.linear and len(a) > 2 and isinstance(a[2], fx.Node)
                    and a[2] in active):
            raise CannotSplit(f"op {n.name}: only a constant 2-D right side is supported")
        wt = val(w) if t is F.linear else _transposed(rec, bw, w, val, call)
        acc(x, call(torch.matmul, g, wt))
    elif t is torch.cat:
        ndim = len(_shape(n))
        dim = _dim(n, 1, 0, ndim)
        off = 0
        for x in a[0]:
            size = _shape(x)[dim]
            acc(x, bw.call_method("narrow", (g, dim, off, size)))
            off += size
    else:
        name = getattr(t, "__name__", t)
        raise CannotSplit(f"no derivative rule here for {name}")


def check_vjp(vjp: StepVJP, split, x: Tensor, state: List[Tensor]) -> None:
    """``CannotSplit`` unless ``vjp`` gives autograd's gradients on the example rows."""
    n_out = split.n_state + split.n_args
    with torch.no_grad():
        fr = split.pre(x) if split.pre is not None else [x]
    fr = [f.detach().requires_grad_() for f in fr]
    st = [s.detach().requires_grad_() for s in state]
    with torch.random.fork_rng(devices=[]):
        seed = torch.seed()
        with torch.enable_grad():
            res = split.rec(fr, st)
        torch.manual_seed(seed)
        with torch.no_grad():
            fwd_res = vjp.fwd([f.detach() for f in fr], [s.detach() for s in st])
    saved = fwd_res[n_out:]
    new = res[:split.n_state]
    taps = res[split.n_state:split.n_state + split.n_taps]
    for a, b in zip(new, fwd_res):
        if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
            raise CannotSplit("its rewritten step differs from the cell")
    gen = torch.Generator().manual_seed(1)
    g = [torch.randn(t.shape, generator=gen).to(t) for t in new]
    wrt = [f for f, m in zip(fr, vjp.fr_mask) if m] + st + list(taps)
    want = torch.autograd.grad(new, wrt, g, allow_unused=True)
    go = torch.randn(g[0].shape, generator=gen).to(g[0])
    with torch.no_grad():
        got = vjp.bwd(list(saved), g, go)
    k0 = sum(vjp.fr_mask)
    got = list(got)
    got[k0] = got[k0] - go  # compare the state gradient without the added output one
    for w, t, v in zip(want, wrt, got):
        w = torch.zeros_like(t) if w is None else w
        if w.shape != v.shape or not torch.allclose(w, v, rtol=1e-5, atol=1e-6):
            raise CannotSplit("its symbolic derivative differs from autograd's")
