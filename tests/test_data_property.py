"""Property: a random ragged frame either loads exactly or raises a ValueError naming a
column at fault; never another exception type."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlrnn.data import DataWarning, from_dataframe

FEATURES, TARGETS = ["f0", "f1"], ["y"]


@st.composite
def ragged_frames(draw):
    n = draw(st.integers(1, 5))
    str_ids = draw(st.booleans())
    raw_ids = draw(st.lists(st.integers(-30, 30), min_size=n, max_size=n, unique=True))
    ids = [f"s{i}" for i in raw_ids] if str_ids else raw_ids
    lengths = draw(st.lists(st.integers(1, 20), min_size=n, max_size=n))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    parts = []
    for sid, T in zip(ids, lengths):
        # Increasing, irregular time stamps.
        t = np.cumsum(rng.integers(1, 4, size=T)) + int(rng.integers(-10, 10))
        parts.append(pd.DataFrame({"id": sid, "t": t, "f0": rng.normal(size=T),
                                   "f1": rng.integers(-3, 3, size=T).astype(float),
                                   "y": rng.normal(size=T)}))
    df = pd.concat(parts, ignore_index=True)
    # Occasional bad cells and duplicated (id, time) rows.
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["nan", "inf", "-inf", "dup"]))
        r = draw(st.integers(0, len(df) - 1))
        if kind == "dup":
            df = pd.concat([df, df.iloc[[r]].assign(f0=rng.normal())], ignore_index=True)
        else:
            col = draw(st.sampled_from(FEATURES + TARGETS))
            df.loc[r, col] = float(kind)
    if draw(st.booleans()):
        df["t"] = pd.Timestamp("2020-01-01") + pd.to_timedelta(df["t"], unit="min")
    df.index = rng.permutation(len(df)) * 3 + 100      # unique labels, not positions
    return df.iloc[rng.permutation(len(df))]


def faults(df, on_nonfinite):
    """Column names an error may blame (empty: the frame must load)."""
    blame = set()
    if df.duplicated(["id", "t"]).any():
        return {"id", "t"}
    bad = ~np.isfinite(df[FEATURES + TARGETS].to_numpy())
    for j, c in enumerate(FEATURES + TARGETS):
        if bad[:, j].any() and on_nonfinite == "raise":
            blame.add(c)
    if on_nonfinite == "drop":
        kept = df[~bad.any(axis=1)]
        if len(kept) == 0:
            blame.update(c for j, c in enumerate(FEATURES + TARGETS) if bad[:, j].any())
        elif (kept.groupby("id").size() < 2).any():
            blame.add("id")
    elif not blame and (df.groupby("id").size() < 2).any():
        blame.add("id")
    return blame


def check_exact(df, ds):
    assert ds.ids == sorted(df["id"].unique())
    for i, sid in enumerate(ds.ids):
        rows = df[df["id"] == sid].sort_values("t")
        x, y = ds[i]
        assert torch.equal(x, torch.tensor(rows[FEATURES].to_numpy()))
        assert torch.equal(y, torch.tensor(rows[TARGETS].to_numpy()))
        assert list(ds.index[i]) == list(rows.index)
        assert list(ds.times[i]) == list(rows["t"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(df=ragged_frames(), on_nonfinite=st.sampled_from(["raise", "drop"]))
def test_random_frames_load_exactly_or_raise_valueerror(df, on_nonfinite):
    blame = faults(df, on_nonfinite)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            ds = from_dataframe(df, id_col="id", time_col="t", target_cols=TARGETS,
                                on_nonfinite=on_nonfinite, dtype=torch.float64)
    except ValueError as err:
        assert blame, f"unexpected error on a clean frame: {err}"
        assert any(f"'{c}'" in str(err) for c in blame), (blame, str(err))
        return
    assert not blame, f"expected an error blaming {blame}"
    if on_nonfinite == "drop":
        df = df[np.isfinite(df[FEATURES + TARGETS].to_numpy()).all(axis=1)]
    check_exact(df, ds)
