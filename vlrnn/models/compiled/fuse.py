"""Rewrites of a split cell's per-step graph before it is differentiated and scripted
(``StackedRNN(compile=True)``): ``nn.Linear`` as one ``mm``/``addmm`` on a transposed
weight alias, ``a + h W^T`` as one ``addmm``, ``nn.LayerNorm`` as ``native_layer_norm``
(whose statistics :mod:`.vjp`'s backward reads). Same numbers as the modules.
"""
from __future__ import annotations

import copy
import operator
from types import SimpleNamespace
from typing import Dict

import torch
import torch.fx as fx
from torch import nn

from .vjp import _LAYER_NORM, _op, _shape

__all__ = ["fuse_linear"]


def fuse_linear(rec: fx.GraphModule, n_state: int) -> fx.GraphModule:
    """``rec`` with each 2-D ``nn.Linear`` call written as one ``mm`` / ``addmm`` on a
    transposed alias of its weight, and ``a + mm(h, W^T)`` as ``addmm(a, h, W^T)``: one
    kernel instead of two or three dispatcher layers and an add per step. Parameters
    stay aliases (same storage). A fused node keeps its place in the output, so a tap
    that became an ``addmm`` still gets the gradient of its output (the same as the
    linear's)."""
    g = copy.deepcopy(rec.graph)
    out = fx.GraphModule(rec, g)
    transposes: Dict[str, str] = {}
    for n in list(g.nodes):
        if n.op != "call_module" or len(n.args) != 1 or n.kwargs \
                or len(_shape(n.args[0]) or ()) != 2:
            continue
        mod = out.get_submodule(n.target)
        if type(mod) is nn.LayerNorm and len(mod.normalized_shape) == 1 \
                and mod.elementwise_affine and mod.bias is not None:
            _native_layer_norm(out, g, n, mod)
            continue
        if type(mod) is not nn.Linear:
            continue
        w_name = f"{n.target.replace('.', '_')}_w"
        out.register_buffer(w_name, mod.weight, persistent=False)
        out.register_buffer(w_name + "t", mod.weight.t(), persistent=False)
        transposes[w_name + "t"] = w_name
        with g.inserting_before(n):
            wt = g.get_attr(w_name + "t")
            wt.meta["tensor_meta"] = SimpleNamespace(shape=mod.weight.t().shape)
            if mod.bias is None:
                new = g.call_function(torch.mm, (n.args[0], wt))
            else:
                out.register_buffer(w_name + "b", mod.bias, persistent=False)
                new = g.call_function(torch.addmm, (g.get_attr(w_name + "b"), n.args[0], wt))
        new.meta = dict(n.meta)
        n.replace_all_uses_with(new)
        g.erase_node(n)
    out_node = list(g.nodes)[-1]
    state_out = set(out_node.args[0][:n_state])
    for n in list(g.nodes):  # a + mm(h, W^T) -> addmm(a, h, W^T)
        if _op(n) not in (operator.add, torch.add) or n.kwargs or len(n.args) != 2:
            continue
        for m, other in ((n.args[1], n.args[0]), (n.args[0], n.args[1])):
            # the mm may also be a tap (an output): the addmm's gradient is the mm's
            if isinstance(m, fx.Node) and _op(m) is torch.mm and m not in state_out \
                    and set(m.users) <= {n, out_node} \
                    and isinstance(other, fx.Node) and _shape(other) == _shape(n):
                with g.inserting_before(n):
                    new = g.call_function(torch.addmm, (other, m.args[0], m.args[1]))
                new.meta = dict(n.meta)
                n.replace_all_uses_with(new)
                m.replace_all_uses_with(new)
                g.erase_node(n)
                g.erase_node(m)
                break
    out.recompile()
    out._vlrnn_transposes = transposes
    return out


def _native_layer_norm(out: fx.GraphModule, g: fx.Graph, n: fx.Node, mod: nn.LayerNorm
                       ) -> None:
    """``n`` (a call of ``mod``) as ``native_layer_norm``, whose mean and 1/std the
    backward reads (fx getitem nodes for all three results)."""
    name = n.target.replace(".", "_") + "_ln"
    out.register_buffer(name + "w", mod.weight, persistent=False)
    out.register_buffer(name + "b", mod.bias, persistent=False)
    with g.inserting_before(n):
        w, b = g.get_attr(name + "w"), g.get_attr(name + "b")
        ln = g.call_function(_LAYER_NORM, (n.args[0], list(mod.normalized_shape), w, b,
                                           mod.eps))
        items = [g.call_function(operator.getitem, (ln, k)) for k in range(3)]
    items[0].meta = dict(n.meta)
    n.replace_all_uses_with(items[0])
    g.erase_node(n)
