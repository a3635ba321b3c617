"""The Trainer's collaborators, each on its own: BatchLoss (one batch's loss and weight)
and EpochLoop (one epoch's passes), built from explicit inputs without a Trainer."""
import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

import vlrnn
from vlrnn.models import WithHead
from vlrnn.training._batch_loss import BatchLoss, dtype_of
from vlrnn.training._checkpointing import Progress
from vlrnn.training._epochs import EpochLoop
from vlrnn.training._guards import Guards
from vlrnn.training._placement import Placement


def _model():
    torch.manual_seed(0)
    return WithHead(nn.GRU(2, 3), nn.Linear(3, 1)).double()


def _batch(lengths=(5, 3), nan_at=None):
    torch.manual_seed(1)
    xs = [torch.randn(n, 2, dtype=torch.float32) for n in lengths]
    ys = [torch.randn(n, 1, dtype=torch.float32) for n in lengths]
    if nan_at is not None:
        ys[0][nan_at] = math.nan
    return pack_sequence(xs, enforce_sorted=False), pack_sequence(ys, enforce_sorted=False)


def _loss(model, reduction="mean", loss_fn=None):
    return BatchLoss(model, loss_fn or nn.MSELoss(reduction="none"), None,
                     reduction=reduction, block_len=2, schedule="flat", memory_budget=None,
                     offload=None, device=torch.device("cpu"))


def test_batch_loss_moves_to_the_model_dtype_and_equals_the_engine():
    model = _model()
    loss = _loss(model)
    x, y = loss.move(_batch(), 0)
    assert x.data.dtype == torch.float64 == dtype_of(model) and y.data.dtype == torch.float64
    ref = vlrnn.block_loss(model, nn.MSELoss(reduction="none"), x, y, block_len=2).loss
    torch.testing.assert_close(loss(model, x, y, train=True), ref, rtol=1e-12, atol=0)
    with pytest.raises(TypeError, match="every batch must be a pair"):
        loss.move((x,), 3)


@pytest.mark.parametrize("reduction, weight", [("mean", 8.0), ("sum", 8.0),
                                               ("seq_mean", 2.0), ("observed", 7.0)])
def test_batch_loss_weighs_rows_sequences_or_observed_targets(reduction, weight):
    model = _model()
    loss = _loss(model, reduction)
    x, y = loss.move(_batch(nan_at=1), 0)
    c, w = loss.weigh(0.5, x, y)
    assert w == weight
    assert c == (0.5 if reduction == "sum" else 0.5 * weight)


def _loop(model, skip_nonfinite=False):
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    guards = Guards(skip_nonfinite, False, params, [("", model)])
    return EpochLoop(model, model, _loss(model), opt, params, guards,
                     Placement(False, "cpu"), clip_grad_norm=None, tensorboard=None,
                     progress=False), opt


def test_epoch_loop_trains_and_counts_global_steps():
    model = _model()
    loop, _ = _loop(model)
    before = [p.detach().clone() for p in model.parameters()]
    run = Progress()
    mean, rows_per_s, skipped = loop.train([_batch(), _batch((4, 4, 1))], 1, run)
    assert run.global_step == 2 and skipped == 0 and rows_per_s > 0 and math.isfinite(mean)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with torch.no_grad():
        ref = float(_loss(model)(model, *_loss(model).move(_batch(), 0), train=False))
    assert loop.evaluate([_batch()]) == pytest.approx(ref)
    with pytest.raises(ValueError, match="yielded no batches"):
        loop.evaluate([])


def test_epoch_loop_skips_a_nonfinite_step_and_leaves_the_weights():
    model = _model()
    loop, _ = _loop(model, skip_nonfinite=True)
    before = [p.detach().clone() for p in model.parameters()]
    bad = _batch()
    bad[1].data[0] = math.inf
    mean, _, skipped = loop.train([bad], 1, Progress())
    assert skipped == 1 and math.isnan(mean)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
