"""Forecast a panel of ragged yearly series: fertility rates of ~200 countries (statsmodels).

The World Bank's total fertility rate (births per woman), 1960-2011, ships with
statsmodels (``statsmodels.datasets.fertility``; World Bank terms of use, see its
``COPYRIGHT``). Series start in different years and some have gaps: each country keeps its
latest gap-free stretch, so the panel is ragged. The last ``h = 5`` years (2007-2011) of
every series are held out; the model sees each series up to 2006 and forecasts the next
five years, through the one-call API::

    result = vlrnn.pack_and_train(train, id_col="country", time_col="year",
                                  target_cols="fertility", horizon=5)
    result.forecast(train)        # the 5 years after each series' last year (2007-2011)
    result.evaluate(panel)        # mae, rmse next to persistence_mae, persistence_rmse

Baselines on the same held-out years: persistence (the 2006 value for all five years), the
naive baseline of ``evaluate``, and drift (the 2006 value plus the mean yearly change of
2001-2006 per year ahead), a stronger naive forecast for trending series.

    python examples/forecasting.py            # the README figure (2-4 minutes)
    python examples/forecasting.py --quick    # smoke run, a few seconds
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from lowlevel_tasks import fit_forecaster, one_call_supports  # noqa: E402

import vlrnn  # noqa: E402

H = 5               # forecast horizon, years
LAST_TRAIN = 2006   # the model sees years up to this one
MIN_YEARS = 15      # series shorter than this (up to LAST_TRAIN) are left out


def load_panel() -> pd.DataFrame:
    """Long frame ``country, year, fertility``: each country's latest gap-free stretch."""
    from statsmodels.datasets import fertility
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wide = fertility.load_pandas().data
    years = [c for c in wide.columns if c.isdigit()]
    long = wide.melt(id_vars=["Country Code"], value_vars=years, var_name="year",
                     value_name="fertility").rename(columns={"Country Code": "country"})
    long["year"] = long["year"].astype(int)
    long = long.dropna(subset=["fertility"]).sort_values(["country", "year"])
    # a new stretch starts after every gap; keep the last stretch of each country
    stretch = (long.groupby("country")["year"].diff() != 1).groupby(long["country"]).cumsum()
    last = stretch.groupby(long["country"]).transform("max")
    return long[stretch == last].reset_index(drop=True)


def errors(pred: np.ndarray, truth: np.ndarray) -> tuple:
    e = pred - truth
    return float(np.abs(e).mean()), float(np.sqrt((e ** 2).mean()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=None,
                   help="default: pack_and_train's own (150 with --api lowlevel)")
    p.add_argument("--hidden", type=int, default=None,
                   help="default: pack_and_train's own (32 with --api lowlevel)")
    p.add_argument("--lr", type=float, default=None,
                   help="default: pack_and_train's own (3e-3 with --api lowlevel)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--api", choices=["auto", "one-call", "lowlevel"], default="auto",
                   help="one-call: vlrnn.pack_and_train(horizon=5); lowlevel: vlrnn.block_loss "
                        "(lowlevel_tasks.py); auto: one-call if available")
    p.add_argument("--quick", action="store_true", help="a few seconds: 3 epochs")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs = 3
    torch.set_num_threads(args.threads)
    api = args.api
    if api == "auto":
        api = "one-call" if one_call_supports("horizon") else "lowlevel"

    panel = load_panel()
    n_before = panel.groupby("country")["year"].agg(["min", "max", "size"])
    keep = n_before.index[(n_before["max"] >= LAST_TRAIN + H)
                          & ((n_before["max"] - n_before["min"] + 1 - H) >= MIN_YEARS)]
    panel = panel[panel["country"].isin(keep) & (panel["year"] <= LAST_TRAIN + H)]
    train = panel[panel["year"] <= LAST_TRAIN]
    truth = panel[panel["year"] > LAST_TRAIN].pivot(index="country", columns="year",
                                                    values="fertility")
    lengths = train.groupby("country").size()
    print(f"fertility panel: {len(keep)} series, {lengths.min()}-{lengths.max()} years up to "
          f"{LAST_TRAIN} ({len(train)} rows); forecasting {LAST_TRAIN + 1}-{LAST_TRAIN + H}")

    last = train.groupby("country")["fertility"].last().loc[truth.index]
    persistence = np.repeat(last.to_numpy()[:, None], H, axis=1)
    slope = train.groupby("country")["fertility"].apply(
        lambda s: (s.iloc[-1] - s.iloc[-6]) / 5 if len(s) > 5 else 0.0).loc[truth.index]
    drift = last.to_numpy()[:, None] + slope.to_numpy()[:, None] * np.arange(1, H + 1)

    given = {k: v for k, v in dict(epochs=args.epochs, hidden_size=args.hidden,
                                   lr=args.lr).items() if v is not None}
    low = dict(epochs=args.epochs or 150, hidden=args.hidden or 32, lr=args.lr or 3e-3)
    n_epochs = given.get("epochs", "default") if api == "one-call" else low["epochs"]
    t0 = time.perf_counter()
    extra = ""
    if api == "one-call":
        print(f"training through vlrnn.pack_and_train(..., horizon={H}), {n_epochs} epochs")
        result = vlrnn.pack_and_train(train, id_col="country", time_col="year",
                                      target_cols="fertility", horizon=H,
                                      seed=args.seed, **given)
        # epochs run (the defaults choose them), per member of the default ensemble
        members = result.history.groupby("member") if "member" in result.history else None
        n_epochs = (len(result.history) if members is None else
                    "/".join(str(len(g)) for _, g in members))
        fc = result.forecast(train)
        print(fc.head(H).to_string())
        model = fc.pivot(index="country", columns="year", values="fertility")
        model = model.loc[truth.index, truth.columns].to_numpy()
        metrics = result.evaluate(panel)
        extra = ("\nevaluate(panel), every step's next-5-year forecast, in-sample years "
                 "included: " + ", ".join(f"{k} {float(v):.3f}" for k, v in metrics.items()))
    else:
        print(f"training through vlrnn.block_loss (lowlevel_tasks.py), {n_epochs} epochs")
        series = [g["fertility"].to_numpy() for _, g in train.groupby("country")]
        names = [c for c, _ in train.groupby("country")]
        forecast = fit_forecaster(series, H, **low, seed=args.seed)
        model = pd.DataFrame(forecast(series), index=names).loc[truth.index].to_numpy()
    seconds = time.perf_counter() - t0

    y = truth.to_numpy()
    rows = [("vlrnn LSTM", model), ("persistence (last value)", persistence),
            ("drift (last 5 years' trend)", drift)]
    print(f"\nheld-out {LAST_TRAIN + 1}-{LAST_TRAIN + H}, {len(y)} series x {H} years, "
          "births per woman:")
    print("| forecast | MAE | RMSE |\n|---|---:|---:|")
    scores = {}
    for name, pred in rows:
        scores[name] = errors(pred, y)
        print(f"| {name} | {scores[name][0]:.3f} | {scores[name][1]:.3f} |")
    print(extra)
    mae, rmse = scores["vlrnn LSTM"]
    pmae, prmse = scores["persistence (last value)"]
    dmae = scores["drift (last 5 years' trend)"][0]
    print(f"trained in {seconds:.0f} s via the {api} API")
    print(f"RESULT fertility 5-year forecast MAE {mae:.3f} RMSE {rmse:.3f}; persistence MAE "
          f"{pmae:.3f} RMSE {prmse:.3f}; drift MAE {dmae:.3f} ({api} API, {n_epochs} "
          f"epochs, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
