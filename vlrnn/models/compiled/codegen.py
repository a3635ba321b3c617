"""TorchScript loops with the step written into their body (``StackedRNN(compile=True)``).

The generic loops of :mod:`.block` pass lists in and out of the step and slice
them every step; in TorchScript's interpreter those list operations cost as much as the
kernels of a small cell. Here the step graph (an fx graph whose inputs are lists) is
rewritten with one variable per input, turned into Python source by fx, and pasted
into a loop written for this cell's numbers of inputs and outputs; the result is
scripted like any module. Same ops, same order: same numbers.
"""
from __future__ import annotations

import itertools
import linecache
import operator
import re
import typing
from typing import Dict, List, Sequence, Tuple

import torch
import torch.fx as fx
from torch import Tensor, nn

__all__ = ["forward_loop", "reverse_loop"]

_counter = itertools.count()
_DELETE = re.compile(r";\s+(?:[A-Za-z_]\w*\s=\s)+None\s*$")


def _step_source(gm: fx.GraphModule, lists: Dict[str, str], scalars: Dict[str, str]
                 ) -> Tuple[List[str], List[str], dict]:
    """``gm``'s body with ``lists[name][k]`` read as variable ``{prefix}{k}`` and the
    scalar placeholders renamed: (body lines, names of the outputs, globals)."""
    phs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    items: Dict[Tuple[str, int], fx.Node] = {}
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target is operator.getitem \
                and isinstance(n.args[0], fx.Node) and n.args[0].name in lists:
            items.setdefault((n.args[0].name, n.args[1]), n)
    g = fx.Graph()
    env: Dict[fx.Node, fx.Node] = {}
    for (ph_name, k), n in sorted(items.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        new = g.placeholder(f"{lists[ph_name]}{k}")
        new.meta = dict(n.meta)
    made = {p.name: p for p in g.nodes}
    for ph in phs:
        if ph.name in scalars:
            made[scalars[ph.name]] = g.placeholder(scalars[ph.name])
            env[ph] = made[scalars[ph.name]]
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            continue
        key = (n.args[0].name, n.args[1]) if n.op == "call_function" \
            and n.target is operator.getitem and isinstance(n.args[0], fx.Node) \
            and n.args[0].name in lists else None
        if key is not None:
            env[n] = made[f"{lists[key[0]]}{key[1]}"]
        elif n.op == "output":
            g.output(fx.node.map_arg(n.args[0], lambda a: env[a]))
        else:
            env[n] = g.node_copy(n, lambda a: env[a])
    code = g.python_code(root_module="self.step")
    lines = code.src.strip("\n").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("def "))
    body = [_DELETE.sub("", line) for line in lines[start + 1:]]
    ret = body.pop()
    while not ret.strip():
        ret = body.pop()
    ret = ret.strip()
    if not ret.startswith("return [") or not ret.endswith("]"):
        raise RuntimeError(f"unexpected step code: {ret}")
    outs = [o.strip() for o in ret[len("return ["):-1].split(",") if o.strip()]
    return [line for line in body if line.strip()], outs, dict(code.globals)


def _compile(src: str, globs: dict, step: nn.Module, name: str) -> torch.jit.ScriptModule:
    """Script a module whose ``forward`` is ``src`` and whose ``step`` is ``step``."""
    filename = f"<vlrnn {name} {next(_counter)}>"
    lines = src.splitlines(True)
    linecache.cache[filename] = (len(src), None, lines, filename)  # TorchScript reads it
    scope = dict(globs)
    scope.update(torch=torch, Tensor=Tensor, List=typing.List, Tuple=typing.Tuple)
    exec(compile(src, filename, "exec"), scope)  # noqa: S102 (our own generated code)
    cls = type(name, (nn.Module,), {"forward": scope["forward"],
                                    "__module__": __name__})
    mod = cls()
    mod.step = step
    return torch.jit.script(mod)


def _indent(lines: Sequence[str], n: int) -> List[str]:
    """fx's body lines (indented 4) indented ``n``."""
    return [" " * (n - 4) + line for line in lines]


def forward_loop(step: fx.GraphModule, n_state: int, n_frontier: int
                 ) -> torch.jit.ScriptModule:
    """The per-step loop over ``step(fr, st) -> new_state + recorded`` (see
    ``block._SplitLoop``, same call and results)."""
    body, outs, globs = _step_source(step, {"fr": "_v_f", "st": "_v_s"}, {})
    ns, nf = n_state, n_frontier
    s = [f"_v_s{k}" for k in range(ns)]
    src = ["def forward(self, frontier: List[Tensor], sizes: List[int], state: List[Tensor],",
           "            record: bool) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:",
           "    _v_outs: List[Tensor] = []",
           "    _v_extra: List[Tensor] = []",
           "    _v_ended: List[List[Tensor]] = []",
           "    _v_cur = sizes[0]"]
    src += [f"    {v} = state[{k}]" for k, v in enumerate(s)]
    src += ["    for _v_i in range(len(sizes)):",
            "        _v_n = sizes[_v_i]",
            "        if _v_n < _v_cur:",
            "            _v_ended.append([" + ", ".join(f"{v}[_v_n:_v_cur]" for v in s) + "])"]
    src += [f"            {v} = {v}[:_v_n]" for v in s]
    src += ["            _v_cur = _v_n"]
    src += [f"        _v_f{k} = frontier[_v_i * {nf} + {k}]" for k in range(nf)]
    src += _indent(body, 8)
    src += [f"        _v_o{k} = {o}" for k, o in enumerate(outs)]
    src += [f"        {v} = _v_o{k}" for k, v in enumerate(s)]
    src += ["        _v_outs.append(_v_s0)"]
    if len(outs) > ns:
        src += ["        if record:"]
        src += [f"            _v_extra.append(_v_o{k})" for k in range(ns, len(outs))]
    src += ["    _v_state = [" + ", ".join(s) + "]",
            "    if len(_v_ended) > 0:",
            "        _v_ended.reverse()",
            f"        _v_state = [torch.cat([_v_state[k]] + [e[k] for e in _v_ended]) "
            f"for k in range({ns})]",
            "    return _v_outs, _v_state, _v_extra"]
    return _compile("\n".join(src) + "\n", globs, step, "_GeneratedForwardLoop")


def reverse_loop(bwd: fx.GraphModule, n_state: int, n_saved: int, n_gfr: int
                 ) -> torch.jit.ScriptModule:
    """The per-step backward over ``bwd(saved, g, go)`` (see
    ``block._ReverseLoop``, same call and results)."""
    body, outs, globs = _step_source(bwd, {"saved": "_v_sv", "g": "_v_g"}, {"go": "_v_go"})
    ns, nv, nf = n_state, n_saved, n_gfr
    g = [f"_v_g{k}" for k in range(ns)]
    src = ["def forward(self, saved: List[Tensor], sizes: List[int], g_out: List[Tensor],",
           "            g_final: List[Tensor]) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:",
           "    _v_T = len(sizes)",
           "    _v_rows = sizes[_v_T - 1]",
           "    _v_gfr: List[Tensor] = []",
           "    _v_gtap: List[Tensor] = []"]
    src += [f"    {v} = g_final[{k}][:_v_rows]" for k, v in enumerate(g)]
    src += ["    _v_g0 = _v_g0 + g_out[_v_T - 1]",
            "    for _v_j in range(_v_T):",
            "        _v_i = _v_T - 1 - _v_j",
            "        _v_n = sizes[_v_i]",
            "        if _v_rows < _v_n:",
            "            _v_g0 = torch.cat([_v_g0, g_final[0][_v_rows:_v_n] + "
            "g_out[_v_i][_v_rows:_v_n]])"]
    src += [f"            {v} = torch.cat([{v}, g_final[{k}][_v_rows:_v_n]])"
            for k, v in enumerate(g) if k > 0]
    src += ["            _v_rows = _v_n",
            "        if _v_i > 0:",
            "            _v_go = g_out[_v_i - 1]",
            "            if sizes[_v_i - 1] != _v_n:",
            "                _v_go = _v_go[:_v_n]",
            "        else:",
            "            _v_go = torch.zeros_like(_v_g0)"]
    src += [f"        _v_sv{k} = saved[_v_i * {nv} + {k}]" for k in range(nv)]
    src += _indent(body, 8)
    src += [f"        _v_o{k} = {o}" for k, o in enumerate(outs)]
    src += [f"        _v_gfr.append(_v_o{k})" for k in range(nf)]
    src += [f"        _v_gtap.append(_v_o{k})" for k in range(nf + ns, len(outs))]
    src += [f"        {v} = _v_o{nf + k}" for k, v in enumerate(g)]
    src += ["    return _v_gfr, [" + ", ".join(g) + "], _v_gtap"]
    return _compile("\n".join(src) + "\n", globs, bwd, "_GeneratedReverseLoop")
