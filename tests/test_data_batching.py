"""vlrnn.data batching: collate_packed, LengthBucketSampler, make_loader."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from vlrnn.data import LengthBucketSampler, collate_packed, from_dataframe, make_loader


def pairs(lengths, F=3, K=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(T, F, generator=g), torch.randn(T, K, generator=g)) for T in lengths]


# --- collate ------------------------------------------------------------------------

def test_collate_round_trip_keeps_pairing():
    batch = pairs([4, 9, 1, 6, 6])
    xp, yp = collate_packed(batch)
    assert isinstance(xp, PackedSequence) and isinstance(yp, PackedSequence)
    assert torch.equal(xp.batch_sizes, yp.batch_sizes)
    assert torch.equal(xp.sorted_indices, yp.sorted_indices)
    xpad, lens = pad_packed_sequence(xp)          # (T_max, B, F), input batch order
    ypad, _ = pad_packed_sequence(yp)
    for b, (x, y) in enumerate(batch):
        T = x.shape[0]
        assert int(lens[b]) == T
        assert torch.equal(xpad[:T, b], x) and torch.equal(ypad[:T, b], y)


def test_collate_rejects_length_mismatch():
    x, y = pairs([5])[0]
    with pytest.raises(ValueError, match="item 0: x has 5 steps but y has 4"):
        collate_packed([(x, y[:4])])


def test_collate_rejects_empty():
    with pytest.raises(ValueError, match="empty batch"):
        collate_packed([])
    x, y = pairs([3])[0]
    with pytest.raises(ValueError, match="0 steps"):
        collate_packed([(x[:0], y[:0])])


# --- LengthBucketSampler --------------------------------------------------------------

LENGTHS = list(np.random.default_rng(3).integers(1, 500, size=103))


@pytest.mark.parametrize("batch_size", [1, 4, 10, 103, 200])
@pytest.mark.parametrize("shuffle", [True, False])
def test_sampler_covers_every_index_once(batch_size, shuffle):
    s = LengthBucketSampler(LENGTHS, batch_size, shuffle=shuffle, seed=1)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(len(LENGTHS)))
        assert all(1 <= len(b) <= batch_size for b in batches)


def test_sampler_drop_last():
    s = LengthBucketSampler(LENGTHS, 10, drop_last=True)
    batches = list(s)
    assert len(batches) == len(s) == 10
    assert all(len(b) == 10 for b in batches)
    assert len({i for b in batches for i in b}) == 100
    # The dropped series change with the epoch (not always the longest ones).
    dropped = [set(range(103)) - {i for b in s.batches(e) for i in b} for e in range(5)]
    assert len({frozenset(d) for d in dropped}) > 1


def test_sampler_batches_have_similar_lengths():
    s = LengthBucketSampler(LENGTHS, 8, seed=0)
    batches = sorted(list(s), key=lambda b: min(LENGTHS[i] for i in b))
    # Length ranges of batches do not overlap: each batch holds neighbours in length order.
    for a, b in zip(batches, batches[1:]):
        assert max(LENGTHS[i] for i in a) <= min(LENGTHS[i] for i in b)
    spread = np.mean([max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in batches])
    assert spread < 100    # random batches of 8 from 1..500 would spread about 390


def test_sampler_deterministic_with_seed_and_differs_across_epochs():
    a = LengthBucketSampler(LENGTHS, 8, seed=5)
    b = LengthBucketSampler(LENGTHS, 8, seed=5)
    assert list(a) == list(b)
    a.set_epoch(0)
    e0 = list(a)
    a.set_epoch(1)
    e1 = list(a)
    assert e0 != e1
    a.set_epoch(0)
    assert list(a) == e0
    assert list(LengthBucketSampler(LENGTHS, 8, seed=6)) != e0


def test_sampler_advances_epoch_without_set_epoch():
    s = LengthBucketSampler(LENGTHS, 8, seed=2)
    first, second = list(s), list(s)
    assert first == s.batches(0) and second == s.batches(1) and first != second


def test_sampler_equal_lengths_shuffle_within_bucket():
    s = LengthBucketSampler([7] * 40, 8, seed=0)
    members = [{frozenset(b) for b in s.batches(e)} for e in range(2)]
    assert members[0] != members[1]


def test_sampler_no_shuffle_shortest_first():
    s = LengthBucketSampler([5, 1, 4, 2, 3], 2, shuffle=False)
    assert list(s) == [[1, 3], [4, 2], [0]]


def test_sampler_mix_varies_membership():
    s = LengthBucketSampler(list(range(1, 65)), 8, seed=0, mix=4)
    m = [{frozenset(b) for b in s.batches(e)} for e in range(2)]
    assert m[0] != m[1]
    assert sorted(i for b in s.batches(0) for i in b) == list(range(64))


def test_sampler_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        LengthBucketSampler([1, 2], 0)


# --- make_loader ----------------------------------------------------------------------

def frame():
    rng = np.random.default_rng(0)
    parts = [pd.DataFrame({"id": i, "t": np.arange(T), "a": rng.normal(size=T),
                           "y": rng.normal(size=T)})
             for i, T in enumerate([3, 17, 5, 12, 8, 2, 9])]
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("bucket", [True, False])
def test_make_loader_yields_packed_batches_covering_dataset(bucket):
    ds = from_dataframe(frame(), id_col="id", time_col="t", target_cols="y",
                        dtype=torch.float64)
    loader = make_loader(ds, batch_size=3, bucket=bucket, seed=0)
    seen = []
    for xp, yp in loader:
        assert isinstance(xp, PackedSequence) and isinstance(yp, PackedSequence)
        xpad, lens = pad_packed_sequence(xp, batch_first=True)
        for b in range(xpad.shape[0]):
            x = xpad[b, :lens[b]]
            # Identify the series by its content.
            match = [i for i in range(len(ds)) if torch.equal(ds[i][0], x)]
            assert len(match) == 1
            seen.append(match[0])
    assert sorted(seen) == list(range(len(ds)))


def test_make_loader_seeded():
    ds = from_dataframe(frame(), id_col="id", time_col="t", target_cols="y")
    order = [[xp.data.sum().item() for xp, _ in make_loader(ds, batch_size=2, seed=s)]
             for s in (0, 0)]
    assert order[0] == order[1]
