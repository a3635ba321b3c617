"""``pack_and_train`` defaults against the tools time-series users compare with (issue 21).

Same train/test splits, one process, one table. Classification and series regression on
the development sets (:mod:`real_sets`): vlrnn's one-call path with all defaults
(``read_ts``/arrays -> ``from_arrays`` -> ``pack_and_train(frame, **train_kwargs)``,
seed 0) next to aeon 1.6.0's 1-NN DTW, RDST shapelets, Catch22 and MiniRocket fitted on
the same split (``--peers`` picks some), and InceptionTime's published accuracy on the archive's default split (aeon's results file,
first resample). Forecast panels: the last ``h`` values of every
series held out (fertility, US macro, Grunfeld investment; all from statsmodels);
vlrnn's ``pack_and_train(..., horizon=h)`` next to statsmodels'
damped-trend ETS and Theta, and drift / persistence (and seasonal naive where the panel
has a season: macro, quarterly); MASE (scaled by each series'
in-sample one-step naive MAE of the training part) and sMAPE. ``--origins K`` averages
them over K forecast origins, ``h`` steps apart (each method refitted on what precedes
each origin): one held-out window of 8 quarters is a single draw.

    pip install -e ".[benchmark]"
    python benchmarks/real_data.py                      # everything (about 10-20 min)
    python benchmarks/real_data.py --sets ArrowHead fertility --no-peers
    python benchmarks/real_data.py --options '{"front": null}'   # a variant of the defaults
    python benchmarks/real_data.py --sets macro grunfeld --origins 6 --tag panels_origins

Writes ``benchmarks/results/real_data.md`` and ``.csv`` (``--tag`` names variants).
Threads: one torch thread (``--threads``); the machine it was run on had 2 shared cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import real_sets

import vlrnn
from vlrnn.training._forecast_metrics import naive_scale, scaled_scores

#: panel -> (loader, horizon, season: None where none is known; macro is quarterly)
PANELS = {"fertility": (real_sets.fertility_panel, 5, None),
          "macro": (real_sets.macro_panel, 8, 4),
          "grunfeld": (real_sets.grunfeld_panel, 4, None)}


def _frames(split: real_sets.Split):
    tr = vlrnn.data.from_arrays(split.X_train, split.y_train)
    te = vlrnn.data.from_arrays(split.X_test, split.y_test,
                                ids=[f"test{i}" for i in range(len(split.X_test))])
    return tr, te


def run_vlrnn(split: real_sets.Split, options: dict[str, Any], seed: int) -> dict[str, Any]:
    tr, te = _frames(split)
    t0 = time.perf_counter()
    res = vlrnn.pack_and_train(tr.frame, **tr.train_kwargs, seed=seed, progress=False,
                               **options)
    sec = time.perf_counter() - t0
    scores = res.evaluate(te.frame, series_target=te.labels)
    score = scores["rmse"] if split.regression else scores["accuracy"]
    return {"score": score, "seconds": sec, "epochs": len(res.history)}


def _aeon_x(xs: list[np.ndarray]):
    """aeon's collection format: ``(n, channels, length)`` or a list of ``(C, T_i)``."""
    if len({x.shape[0] for x in xs}) == 1:
        return np.stack([x.T for x in xs])
    return [np.ascontiguousarray(x.T) for x in xs]


#: the peers of issue 21, in table order
PEERS = ("1-NN DTW", "RDST", "Catch22", "MiniRocket")


def _peer_estimator(peer: str, regression: bool, seed: int):
    """A fresh aeon estimator (aeon 1.6.0; the benchmark's optional extra)."""
    if regression:
        from aeon.regression.convolution_based import MiniRocketRegressor
        from aeon.regression.distance_based import KNeighborsTimeSeriesRegressor
        from aeon.regression.feature_based import Catch22Regressor
        from aeon.regression.shapelet_based import RDSTRegressor
        make = {"1-NN DTW": lambda: KNeighborsTimeSeriesRegressor(n_neighbors=1,
                                                                  distance="dtw"),
                "RDST": lambda: RDSTRegressor(random_state=seed),
                "Catch22": lambda: Catch22Regressor(random_state=seed),
                "MiniRocket": lambda: MiniRocketRegressor(random_state=seed)}
    else:
        from aeon.classification.convolution_based import MiniRocketClassifier
        from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier
        from aeon.classification.feature_based import Catch22Classifier
        from aeon.classification.shapelet_based import RDSTClassifier
        make = {"1-NN DTW": lambda: KNeighborsTimeSeriesClassifier(n_neighbors=1,
                                                                   distance="dtw"),
                "RDST": lambda: RDSTClassifier(random_state=seed),
                "Catch22": lambda: Catch22Classifier(random_state=seed),
                "MiniRocket": lambda: MiniRocketClassifier(random_state=seed)}
    if peer not in make:
        raise ValueError(f"unknown peer {peer!r}; expected one of {list(make)}")
    return make[peer]()


def run_peer(split: real_sets.Split, peer: str, seed: int) -> dict[str, Any]:
    est = _peer_estimator(peer, split.regression, seed)
    Xtr, Xte = _aeon_x(split.X_train), _aeon_x(split.X_test)
    if peer == "MiniRocket" and (isinstance(Xtr, list) or isinstance(Xte, list)):
        # MiniRocket takes equal lengths only: every series padded to the longest by
        # repeating its last value
        n = max(x.shape[0] for x in split.X_train + split.X_test)
        Xtr, Xte = (np.stack([np.pad(x, ((0, n - x.shape[0]), (0, 0)), mode="edge").T
                              for x in xs]) for xs in (split.X_train, split.X_test))
    t0 = time.perf_counter()
    est.fit(Xtr, split.y_train)
    pred = est.predict(Xte)
    sec = time.perf_counter() - t0
    if split.regression:
        score = float(np.sqrt(np.mean((np.asarray(pred, float) - split.y_test) ** 2)))
    else:
        score = float(np.mean(np.asarray(pred) == split.y_test))
    return {"score": score, "seconds": sec}


def published_inception(name: str) -> float:
    try:
        root = real_sets._package_dir("aeon") / "testing" / "example_results_files"
        table = pd.read_csv(root / "classification" / "accuracy" / "InceptionTime_accuracy.csv")
    except (ImportError, FileNotFoundError):
        return float("nan")
    row = table[table.iloc[:, 0] == name]
    return float(row.iloc[0, 1]) if len(row) else float("nan")


# -- forecasts ----------------------------------------------------------------------------
def _series(frame: pd.DataFrame) -> dict[Any, np.ndarray]:
    return {k: g.sort_values("t")["y"].to_numpy(float) for k, g in frame.groupby("id")}


def _peer_forecast(y: np.ndarray, h: int, peer: str, season: int | None = None
                   ) -> np.ndarray:
    from statsmodels.tsa.forecasting.theta import ThetaModel
    from statsmodels.tsa.holtwinters import ExponentialSmoothing
    if peer == "persistence":
        return np.repeat(y[-1], h)
    if peer == "seasonal naive":
        from vlrnn.training._forecast_metrics import seasonal_naive_forecasts
        return seasonal_naive_forecasts(y[:, None], h, season)[-1]
    if peer == "drift":
        slope = (y[-1] - y[0]) / max(len(y) - 1, 1)
        return y[-1] + slope * np.arange(1, h + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if peer == "damped ETS":
            fit = ExponentialSmoothing(y, trend="add", damped_trend=True,
                                       initialization_method="estimated").fit()
            return np.asarray(fit.forecast(h), float)
        if peer == "Theta":
            return np.asarray(ThetaModel(y, period=1, deseasonalize=False).fit()
                              .forecast(h), float)
    raise ValueError(peer)


def _origin(panel: pd.DataFrame, h: int, k: int):
    """``(train, test)`` at the ``k``-th origin back: the last ``k * h`` values of every
    series dropped, then the last ``h`` of what is left held out (``k = 0``: the default
    split)."""
    last = panel.groupby("id")["t"].transform("max")
    cut = panel[panel["t"] <= last - k * h]
    short = cut.groupby("id").size()
    short = short[short < 2 * h + 2]   # training needs more than h values
    if len(short) or cut["id"].nunique() < panel["id"].nunique():
        raise ValueError(f"origin {k} ({k * h} steps back) leaves fewer than 2 h + 2 = "
                         f"{2 * h + 2} values in some series (e.g. {list(short.index[:3])}): "
                         f"use fewer --origins")
    return real_sets.holdout(cut, h)


def run_panel(name: str, options: dict[str, Any], seed: int, peers: bool,
              origins: int = 1) -> list[dict]:
    """One row per method: MASE and sMAPE averaged over ``origins`` forecast origins
    (the default split, then each ``h`` steps earlier; every method refitted on what
    precedes each origin), seconds summed."""
    make, h, season = PANELS[name]
    panel = make()
    naive = ["persistence", "drift"] + (["seasonal naive"] if season else [])
    methods = ["vlrnn defaults"] + naive + (["damped ETS", "Theta"] if peers else [])
    got: dict[str, list[dict]] = {m: [] for m in methods}
    n = 0
    for k in range(origins):
        train, test = _origin(panel, h, k)
        hist, truth = _series(train), _series(test)
        ids = sorted(truth)
        n = len(ids)
        scales = [naive_scale(hist[i][:, None]) for i in ids]
        t0 = time.perf_counter()
        res = vlrnn.pack_and_train(train, id_col="id", time_col="t", target_cols="y",
                                   horizon=h, seed=seed, progress=False, **options)
        out = res.forecast(train)
        forecasts = {"vlrnn defaults": ({i: g["y"].to_numpy(float)
                                         for i, g in out.groupby("id")},
                                        time.perf_counter() - t0)}
        for peer in methods[1:]:
            t0 = time.perf_counter()
            fc = {i: _peer_forecast(hist[i], h, peer, season) for i in ids}
            forecasts[peer] = (fc, time.perf_counter() - t0)
        for method, (fc, sec) in forecasts.items():
            sc = scaled_scores([fc[i] for i in ids], [truth[i] for i in ids], scales)
            got[method].append({"mase": sc["mase"], "smape": sc["smape"], "seconds": sec})
    rows = []
    for m, runs in got.items():
        row = {"set": name, "method": m,
               "mase": float(np.mean([r["mase"] for r in runs])),
               "smape": float(np.mean([r["smape"] for r in runs])),
               "seconds": float(sum(r["seconds"] for r in runs)), "n": n, "h": h}
        if origins > 1:
            row["origins"] = origins
        rows.append(row)
    return rows


def markdown(frame: pd.DataFrame) -> str:
    """A pipe table (no tabulate needed); floats with 3 decimals (seconds with 1)."""
    def cell(col: str, v: Any) -> str:
        if isinstance(v, float):
            secs = col in ("s", "seconds") or col.endswith(" s")
            return "" if np.isnan(v) else (f"{v:.1f}" if secs else f"{v:.3f}")
        return str(v)
    lines = ["| " + " | ".join(frame.columns) + " |",
             "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(frame[c]) else "---"
                            for c in frame.columns) + "|"]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(cell(c, r[c]) for c in frame.columns) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=list(real_sets.CLASSIFICATION
                                                     + real_sets.REGRESSION + tuple(PANELS)))
    p.add_argument("--options", default="{}", help="JSON keyword options for pack_and_train")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--peers-only", action="store_true",
                   help="classification/regression sets: the peers alone (no vlrnn run)")
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS,
                   help="classification/regression peers to fit (default: all four)")
    p.add_argument("--origins", type=int, default=1,
                   help="forecast panels: average over this many origins, h steps apart "
                        "(1: the last h values held out)")
    p.add_argument("--tag", default="", help="suffix of the result files")
    args = p.parse_args(argv)
    if args.origins < 1:
        p.error(f"--origins must be at least 1, got {args.origins}")
    torch.set_num_threads(args.threads)
    options = json.loads(args.options)
    warnings.simplefilter("ignore")
    sets, fc_rows = [], []
    for name in args.sets:
        if name in PANELS:
            fc_rows += run_panel(name, options, args.seed, not args.no_peers, args.origins)
            print(pd.DataFrame(fc_rows[-5:]).to_string(index=False), flush=True)
            _write(sets, fc_rows, options, args, argv)
            continue
        split = real_sets.load(name)
        row: dict[str, Any] = {"set": name, "train/test": f"{len(split.X_train)}/"
                               f"{len(split.X_test)}", "metric": "rmse" if split.regression
                               else "accuracy"}
        if not args.peers_only:
            v = run_vlrnn(split, options, args.seed)
            row.update({"vlrnn": v["score"], "vlrnn s": v["seconds"], "epochs": v["epochs"]})
        if not args.no_peers:
            for peer in args.peers:
                r = run_peer(split, peer, args.seed)
                row.update({peer: r["score"], f"{peer} s": r["seconds"]})
            if not split.regression:
                row["InceptionTime (published)"] = published_inception(name)
        sets.append(row)
        print(json.dumps(row), flush=True)
        _write(sets, fc_rows, options, args, argv)
    _write(sets, fc_rows, options, args, argv)
    return 0


def _write(sets: list[dict], fc_rows: list[dict], options: dict[str, Any], args, argv
           ) -> None:
    """The tables so far (written after every set: a crash keeps what ran)."""
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    stem = "real_data" + (f"_{args.tag}" if args.tag else "")
    with open(out / f"{stem}.md", "w") as f:
        f.write(f"# benchmarks/real_data.py {' '.join(argv or sys.argv[1:])}\n\n")
        f.write(f"pack_and_train options: {options or 'defaults'}; seed {args.seed}; "
                f"torch threads {args.threads}\n\n")
        if sets:
            f.write(markdown(pd.DataFrame(sets)) + "\n\n")
        if fc_rows:
            f.write(markdown(pd.DataFrame(fc_rows)) + "\n")
    pd.concat([pd.DataFrame(sets), pd.DataFrame(fc_rows)]).to_csv(out / f"{stem}.csv",
                                                                   index=False)
    print(f"wrote {out / stem}.md", flush=True)


if __name__ == "__main__":
    sys.exit(main())
