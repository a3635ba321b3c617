"""Which tensors a block's autograd graph reaches.

Block 0 runs with a graph before the engine's ``autograd.Function`` is applied: the
leaves that graph reaches (parameters, and tensors a lambda ``loss_fn`` captured) become
the Function's explicit inputs, so their gradients come back as input gradients.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Set, Tuple

import torch
from torch.autograd.graph import Node


def next_node_number() -> int:
    """Sequence number the next autograd node created on this thread will get."""
    probe = torch.zeros((), requires_grad=True)
    with torch.enable_grad():
        node = (probe * 1).grad_fn
        assert node is not None  # a product with a leaf that requires grad, grad enabled
        return node._sequence_nr() + 1


def graph_leaves(roots: Sequence[Optional[torch.Tensor]], exclude: set,
                 since: int) -> Tuple[List[torch.Tensor], bool]:
    """Tensors that require grad and have no history (graph leaves) reachable from
    ``roots``, in a fixed order, skipping ids in ``exclude``; and whether the graph
    reaches a node created before node number ``since`` (outside the block, e.g. a
    tensor a lambda ``loss_fn`` captured: its graph is shared by every block)."""
    found: List[torch.Tensor] = []
    found_ids: Set[int] = set()
    seen: Set[Node] = set()
    shared = False
    stack: List[Optional[Node]] = []  # next_functions name None for inputs without a graph
    for t in roots:
        if t is None or not t.requires_grad:
            continue
        if t.grad_fn is None:
            if id(t) not in exclude and id(t) not in found_ids:
                found.append(t)
                found_ids.add(id(t))
        else:
            stack.append(t.grad_fn)
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)  # AccumulateGrad nodes hold their leaf
        if var is not None:
            if id(var) not in exclude and id(var) not in found_ids:
                found.append(var)
                found_ids.add(id(var))
            continue
        if fn._sequence_nr() < since:
            shared = True
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return found, shared


def unique_tensors(tensors: List[torch.Tensor]) -> List[torch.Tensor]:
    """``tensors`` without repeats (by identity), first occurrence order."""
    seen: Set[int] = set()
    out: List[torch.Tensor] = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out
