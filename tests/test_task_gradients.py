"""Exactness of the losses the pandas tasks train with, against plain autograd (float64):
masked per-step losses (NaN targets), and losses on pooled final states."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import vlrnn
from vlrnn.models import SequenceModel, StackedRNN, WithHead
from vlrnn.training._losses import MaskedCrossEntropy, masked_mse

LENGTHS = [13, 5, 9, 1, 11]  # ends inside blocks of 4


def _grads(params):
    return [p.grad.detach().clone() for p in params]


def _close(a, b):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-7, atol=1e-10)


def _targets(lengths, k, classes=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    ys = []
    for n in lengths:
        y = (torch.randint(0, classes, (n, 1), generator=g).double() if classes
             else torch.randn(n, k, generator=g))
        drop = torch.rand(n, y.shape[1], generator=g) < 0.3
        ys.append(torch.where(drop, torch.full_like(y, float("nan")), y))
    return ys


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("classes", [None, 3])
def test_masked_loss_is_exact_mean_over_observed_targets(dense, classes):
    torch.manual_seed(0)
    k = 2
    n_out = classes or k
    model = WithHead(nn.LSTM(3, 6, num_layers=2), nn.Linear(6, n_out))
    loss_fn = MaskedCrossEntropy() if classes else masked_mse
    ys = _targets(LENGTHS, k, classes)
    xs = [torch.randn(n, 3) for n in LENGTHS]
    if dense:  # equal lengths, NaN targets anywhere
        T = 10
        x = torch.randn(T, 4, 3)
        y = torch.stack(_targets([T] * 4, k, classes, seed=1), dim=1)
        rows_y = y.reshape(-1, y.shape[-1])
    else:
        x = pack_sequence(xs, enforce_sorted=False)
        y = pack_sequence(ys, enforce_sorted=False)
        rows_y = y.data
    n_obs = int(torch.isfinite(rows_y).sum())
    assert 0 < n_obs < rows_y.numel()  # some targets are missing

    params = list(model.parameters())
    out = vlrnn.block_loss(model, loss_fn, x, y, block_len=4, reduction="sum")
    (out.loss / n_obs).backward()
    got = _grads(params)
    model.zero_grad()

    # plain autograd: one call, loss averaged over the observed targets only
    pred, _ = model(x)
    rows = pred.data if not dense else pred.reshape(-1, n_out)
    seen = torch.isfinite(rows_y).all(1) if classes else torch.isfinite(rows_y)
    if classes:
        ref = nn.functional.cross_entropy(rows[seen], rows_y[seen, 0].long(), reduction="sum")
    else:
        ref = ((rows - torch.nan_to_num(rows_y))[seen] ** 2).sum()
    (ref / n_obs).backward()
    _close(got, _grads(params))
    torch.testing.assert_close(out.loss / n_obs, ref.detach() / n_obs)


def test_trainer_observed_reduction_matches_full_backward():
    torch.manual_seed(1)
    model = WithHead(nn.GRU(3, 5), nn.Linear(5, 2))
    xs = [torch.randn(n, 3) for n in LENGTHS]
    ys = _targets(LENGTHS, 2)
    x, y = pack_sequence(xs, enforce_sorted=False), pack_sequence(ys, enforce_sorted=False)
    ref_model = WithHead(nn.GRU(3, 5), nn.Linear(5, 2))
    ref_model.load_state_dict(model.state_dict())
    n_obs = int(torch.isfinite(y.data).sum())
    vlrnn.full_backward(ref_model, masked_mse, x, y, reduction="sum")
    want = [p.grad / n_obs for p in ref_model.parameters()]

    trainer = vlrnn.Trainer(model, masked_mse, reduction="observed", block_len=4,
                            progress=False, device="cpu", lr=0.0)
    loss = trainer.batch_loss(model, x, y, train=True)
    loss.backward()
    _close(_grads(model.parameters()), want)


def _padded_outputs(model, x):
    y, _ = model.rnn(x)
    pad, lengths = pad_packed_sequence(y)  # (T, B, H), input order
    return pad, lengths


@pytest.mark.parametrize("rnn_kind", ["lstm2", "gru", "stacked"])
@pytest.mark.parametrize("dense", [False, True])
def test_pooled_readout_is_exact(rnn_kind, dense):
    torch.manual_seed(2)
    rnn = {"lstm2": lambda: nn.LSTM(3, 5, num_layers=2), "gru": lambda: nn.GRU(3, 5),
           "stacked": lambda: StackedRNN(3, 5, num_layers=2)}[rnn_kind]()
    model = SequenceModel(rnn, 5, 4, pool=("last", "mean", "max"))
    x = torch.randn(11, 4, 3) if dense else pack_sequence(
        [torch.randn(n, 3) for n in LENGTHS], enforce_sorted=False)
    labels = torch.tensor([0, 3, 1, 2] if dense else [0, 3, 1, 2, 2])
    params = list(model.parameters())

    out = vlrnn.block_loss(model, None, x, None, block_len=4)
    feats = model.features(out.state)
    nn.functional.cross_entropy(model.head(feats), labels).backward()
    got = _grads(params)
    model.zero_grad()

    # reference: the pools computed directly from the whole output sequence
    if dense:
        y, _ = model.rnn(x)
        mean, peak, last = y.mean(0), y.amax(0), y[-1]
    else:
        y, lengths = _padded_outputs(model, x)
        mask = torch.arange(y.shape[0])[:, None] < lengths[None, :]
        mean = (y * mask[..., None]).sum(0) / lengths[:, None]
        peak = torch.where(mask[..., None], y, torch.full_like(y, -1e9)).amax(0)
        last = y[lengths - 1, torch.arange(len(lengths))]
    ref = torch.cat([last, mean, peak], dim=1)
    torch.testing.assert_close(feats.detach(), ref.detach(), rtol=1e-9, atol=1e-12)
    nn.functional.cross_entropy(model.head(ref), labels).backward()
    _close(got, _grads(params))


def test_pooled_state_matches_full_backward_with_block_calls():
    torch.manual_seed(3)
    model = SequenceModel(nn.LSTM(3, 5), 5, 1, pool=("mean", "max"))
    x = pack_sequence([torch.randn(n, 3) for n in LENGTHS], enforce_sorted=False)
    target = torch.randn(len(LENGTHS), 1)
    res = []
    for fn in (vlrnn.block_loss, vlrnn.full_loss):
        model.zero_grad()
        out = fn(model, None, x, None, block_len=4)
        nn.functional.mse_loss(model.readout(out.state), target).backward()
        res.append(_grads(model.parameters()))
    _close(*res)


def test_sequence_model_rejects_unknown_pools():
    with pytest.raises(ValueError, match="pool must name"):
        SequenceModel(nn.GRU(2, 3), 3, 2, pool=("median",))


def test_trainer_adds_per_step_and_sequence_losses_exactly():
    torch.manual_seed(4)
    model = SequenceModel(nn.LSTM(3, 5), 5, 2, pool=("last", "mean"))
    x = pack_sequence([torch.randn(n, 3) for n in LENGTHS], enforce_sorted=False)
    y_steps = pack_sequence(_targets(LENGTHS, 1), enforce_sorted=False)
    y_series = torch.tensor([[0.0], [1.0], [1.0], [0.0], [1.0]])

    def step_loss(out, t):
        return masked_mse(out[:, :1], t)

    ce = MaskedCrossEntropy()

    def seq_loss(state, t):
        return ce(model.readout(state), t).mean()

    trainer = vlrnn.Trainer(model, step_loss, sequence_loss_fn=seq_loss,
                            reduction="observed", block_len=4, progress=False,
                            device="cpu", lr=0.0)
    trainer.batch_loss(model, x, (y_steps, y_series), train=True).backward()
    got = _grads(model.parameters())
    model.zero_grad()
    out = vlrnn.full_loss(model, step_loss, x, y_steps, reduction="sum")
    n_obs = int(torch.isfinite(y_steps.data).sum())
    (out.loss / n_obs + seq_loss(out.state, y_series)).backward()
    _close(got, _grads(model.parameters()))
    with pytest.raises(TypeError, match=r"\(x, \(y_steps, y_series\)\)"):
        trainer.batch_loss(model, x, y_steps, train=True)


def test_class_weight_auto_only_for_imbalanced_classes():
    from vlrnn.training._losses import class_weights as _class_weights

    balanced = torch.tensor([0, 1, 1, 0, 2, 2]).double().numpy()
    assert _class_weights(balanced, 3, "auto") is None
    skewed = torch.tensor([0] * 8 + [1] * 2 + [2] * 2).double().numpy()
    w = _class_weights(skewed, 3, "auto")
    torch.testing.assert_close(w, torch.tensor([0.5, 2.0, 2.0]))
    assert _class_weights(skewed, 3, None) is None
    with pytest.raises(ValueError, match="one weight per class"):
        _class_weights(skewed, 3, [1.0, 2.0])


def test_a_sequence_loss_module_outside_the_model_is_trained():
    torch.manual_seed(5)
    rnn = nn.GRU(3, 4)

    class HeadLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 2)

        def forward(self, state, y):
            return nn.functional.cross_entropy(self.head(state[-1]), y[:, 0].long())

    loss = HeadLoss()
    before = loss.head.weight.detach().clone()
    x = pack_sequence([torch.randn(n, 3) for n in LENGTHS], enforce_sorted=False)
    y = torch.tensor([[0.0], [1.0], [1.0], [0.0], [1.0]])
    trainer = vlrnn.Trainer(rnn, None, sequence_loss_fn=loss, block_len=4, progress=False,
                            device="cpu", lr=0.1)
    assert any(p is loss.head.weight for p in trainer.params)
    trainer.fit([(x, y)], epochs=2)
    assert not torch.equal(loss.head.weight.detach(), before)
    assert trainer.history["train_loss"].notna().all()
