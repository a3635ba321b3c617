"""Ragged real-world series from a pandas frame: ``vlrnn.pack_and_train`` and ``.predict``.

The data is the Mauna Loa weekly CO2 record (March 1958 - December 2001) that ships with
statsmodels (``statsmodels.datasets.co2``). The record has 59 missing weeks, which cut it
into gap-free stretches of very different lengths (a few weeks to 16 years). Rather than
inventing values for the gaps, every stretch becomes one series of a long-format frame::

    stretch  date        co2    dco2  change_4w
    0        1959-08-29  314.1  -0.9  -0.6
    0        1959-09-05  314.4   0.3  -1.4
    ...

so the panel is genuinely ragged: the 7 training series (stretches of at least 12 weeks)
run from 23 to 590 weeks.

The task: at every week, forecast how much CO2 will change over the next 4 weeks
(``change_4w = co2[t+4] - co2[t]``), from the weekly changes seen so far in the stretch
(``dco2 = co2[t] - co2[t-1]``). The model gets no calendar: to forecast the seasonal swing
it has to infer where in the yearly cycle it is from the series' own past, which is what
the recurrent state is for. Weeks from 1997 on are never trained on: at the end the model
forecasts them, running each stretch from its start so that the state has the history.

What it shows:

* ``vlrnn.pack_and_train(df, id_col=..., time_col=..., target_cols=..., feature_cols=...)``
  goes from the frame to a trained LSTM in one call (scaling, a validation split by whole
  series, length-bucketed packed batches, exact BPTT through each whole stretch in blocks
  of ``--block-len`` weeks); its ``.history`` has train/val loss per epoch;
* ``.predict(df)`` returns one prediction per row of any frame with the same columns,
  with the frame's index, so it lines up with the frame (``df.join(pred)``);
* the forecast beats the obvious baselines on the held-out years.

Run (under a minute on 2 CPU cores; ``--quick`` is a ~10 s smoke run)::

    pip install -e ".[examples]"          # statsmodels, for the bundled data set
    python examples/pandas_ragged.py
    python examples/pandas_ragged.py --seed 1 --block-len 64
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

HORIZON = 4                               # weeks ahead
TEST_FROM = pd.Timestamp("1997-01-01")    # held-out period: 1997-2001
MIN_WEEKS = 12                            # stretches shorter than this are left out


def load_co2() -> pd.Series:
    """Weekly CO2 (ppm) indexed by date, NaN in the missing weeks."""
    try:
        from statsmodels.datasets import co2
    except ImportError:
        sys.exit("this example needs statsmodels for its data: pip install -e \".[examples]\"")
    return co2.load_pandas().data["co2"]


def make_frame(s: pd.Series) -> pd.DataFrame:
    """One row per (stretch, week): the long-format ragged frame described above."""
    stretch = s.isna().cumsum()               # constant over each gap-free stretch
    parts = []
    for k, (_, g) in enumerate(s[s.notna()].groupby(stretch[s.notna()])):
        f = pd.DataFrame({"date": g.index, "co2": g.to_numpy()})
        f["dco2"] = f["co2"].diff()                                  # NaN on the first week
        f["change_4w"] = f["co2"].shift(-HORIZON) - f["co2"]         # NaN on the last 4
        f["stretch"] = k
        parts.append(f.dropna())
    df = pd.concat(parts, ignore_index=True)
    n = df.groupby("stretch")["date"].transform("size")
    df = df[n >= MIN_WEEKS]
    # renumber the stretches 0, 1, ... in time order
    df = df.assign(stretch=df["stretch"].rank(method="dense").astype(int) - 1)
    return df[["stretch", "date", "co2", "dco2", "change_4w"]].reset_index(drop=True)


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--hidden", type=int, default=32, help="LSTM hidden size")
    p.add_argument("--layers", type=int, default=2, help="stacked LSTM layers")
    p.add_argument("--block-len", type=int, default=128, help="weeks per vlrnn time block")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is fastest for a model this small)")
    p.add_argument("--quick", action="store_true", help="a ~10 s smoke run (4 epochs)")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs = min(args.epochs, 4)

    s = load_co2()                     # exits with a message if statsmodels is missing
    import torch

    import vlrnn
    torch.set_num_threads(args.threads)

    df = make_frame(s)
    test_rows = df["date"] >= TEST_FROM
    # Training rows: those whose 4-week target lies before the held-out period.
    train_df = df[df["date"] + pd.Timedelta(weeks=HORIZON) < TEST_FROM]
    lengths = train_df.groupby("stretch").size()
    print(f"Mauna Loa weekly CO2, {s.index[0]:%Y-%m} to {s.index[-1]:%Y-%m}, "
          f"{int(s.isna().sum())} missing weeks")
    print(f"training frame: {len(train_df):,} rows in {len(lengths)} gap-free stretches of "
          f"{lengths.min()} to {lengths.max()} weeks (lengths: {', '.join(map(str, lengths))})")
    print(f"held out: {int(test_rows.sum())} weeks from {TEST_FROM:%Y-%m-%d} on\n")

    t0 = time.perf_counter()
    tm = vlrnn.pack_and_train(
        train_df, id_col="stretch", time_col="date", target_cols="change_4w",
        feature_cols=["dco2"], cell="lstm", hidden_size=args.hidden,
        num_layers=args.layers, block_len=args.block_len, batch_size=4,
        epochs=args.epochs, lr=args.lr, val_fraction=0.2, seed=args.seed,
        clip_grad_norm=1.0, progress=False)
    seconds = time.perf_counter() - t0

    h = tm.history
    print("history (MSE in standardised units; val = whole stretches held out of training):")
    step = max(1, len(h) // 10)
    shown = h.iloc[list(range(0, len(h) - 1, step)) + [len(h) - 1]]
    print(shown[["epoch", "train_loss", "val_loss", "seconds"]]
          .to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"trained {tm} in {seconds:.0f} s\n")

    # Predict every row of the whole frame: each stretch runs from its first week, so the
    # held-out weeks are forecast with the state built from the weeks before them (their
    # inputs are past observations; their targets were never seen in training).
    pred = tm.predict(df)                           # same index as df: one row per row
    out = df.join(pred)
    test = out[test_rows]
    model_rmse = rmse(test["change_4w_pred"], test["change_4w"])

    # Baselines on the same held-out weeks.
    persistence = rmse(0.0, test["change_4w"])                    # co2 stays where it is
    trend = rmse(train_df["change_4w"].mean(), test["change_4w"])  # average 4-week rise
    # seasonal naive: the change over the same 4 weeks one year (52 weeks) earlier
    by_date = df.set_index("date")["co2"]
    last_year = (by_date.reindex(test["date"] - pd.Timedelta(weeks=52 - HORIZON)).to_numpy()
                 - by_date.reindex(test["date"] - pd.Timedelta(weeks=52)).to_numpy())
    ok = ~np.isnan(last_year)
    seasonal = rmse(last_year[ok], test["change_4w"].to_numpy()[ok])

    print(f"4-week-ahead CO2 forecast on the held-out weeks {TEST_FROM:%Y}-2001 "
          f"({len(test)} weeks), RMSE in ppm:")
    print(f"  persistence (no change)          {persistence:.3f}")
    print(f"  average 4-week rise (trend)      {trend:.3f}")
    print(f"  same 4 weeks last year           {seasonal:.3f}")
    print(f"  vlrnn LSTM                       {model_rmse:.3f}")
    print("\nlast rows of the frame with their predictions (tm.predict(df) is aligned with df):")
    print(out.tail(5).to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"\nRESULT model RMSE {model_rmse:.3f} ppm vs persistence {persistence:.3f}, "
          f"seasonal naive {seasonal:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
