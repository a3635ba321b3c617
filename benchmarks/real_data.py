"""``pack_and_train`` defaults against the tools time-series users compare with (issue 21).

Same train/test splits, one process, one table. Classification and series regression on
the development sets (:mod:`real_sets`): vlrnn's one-call path with all defaults
(``read_ts``/arrays -> ``from_arrays`` -> ``pack_and_train(frame, **train_kwargs)``,
seed 0) next to aeon 1.6.0's 1-NN DTW and MiniRocket fitted on the same split, and
InceptionTime's published accuracy on the archive's default split (aeon's results file,
first resample). Forecast panels: the last ``h`` values of every
series held out (fertility, US macro, Grunfeld investment; all from statsmodels);
vlrnn's ``pack_and_train(..., horizon=h)`` next to statsmodels'
damped-trend ETS and Theta, and drift / persistence (and seasonal naive where the panel
has a season: macro, quarterly); MASE (scaled by each series'
in-sample one-step naive MAE of the training part) and sMAPE.

    pip install -e ".[benchmark]"
    python benchmarks/real_data.py                      # everything (about 10-20 min)
    python benchmarks/real_data.py --sets ArrowHead fertility --no-peers
    python benchmarks/real_data.py --options '{"front": null}'   # a variant of the defaults

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


def run_peer(split: real_sets.Split, peer: str, seed: int) -> dict[str, Any]:
    if split.regression:
        from aeon.regression.convolution_based import MiniRocketRegressor
        from aeon.regression.distance_based import KNeighborsTimeSeriesRegressor
        make = {"1-NN DTW": lambda: KNeighborsTimeSeriesRegressor(n_neighbors=1,
                                                                  distance="dtw"),
                "MiniRocket": lambda: MiniRocketRegressor(random_state=seed)}
    else:
        from aeon.classification.convolution_based import MiniRocketClassifier
        from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier
        make = {"1-NN DTW": lambda: KNeighborsTimeSeriesClassifier(n_neighbors=1,
                                                                   distance="dtw"),
                "MiniRocket": lambda: MiniRocketClassifier(random_state=seed)}
    est = make[peer]()
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


def run_panel(name: str, options: dict[str, Any], seed: int, peers: bool) -> list[dict]:
    make, h, season = PANELS[name]
    panel = make()
    train, test = real_sets.holdout(panel, h)
    hist, truth = _series(train), _series(test)
    ids = sorted(truth)
    scales = [naive_scale(hist[k][:, None]) for k in ids]
    rows = []

    def score(method: str, fc: dict[Any, np.ndarray], sec: float) -> None:
        s = scaled_scores([fc[k] for k in ids], [truth[k] for k in ids], scales)
        rows.append({"set": name, "method": method, "mase": s["mase"], "smape": s["smape"],
                     "seconds": sec, "n": len(ids), "h": h})

    t0 = time.perf_counter()
    res = vlrnn.pack_and_train(train, id_col="id", time_col="t", target_cols="y", horizon=h,
                               seed=seed, progress=False, **options)
    sec = time.perf_counter() - t0
    out = res.forecast(train)
    score("vlrnn defaults", {k: g["y"].to_numpy(float) for k, g in out.groupby("id")}, sec)
    naive = ["persistence", "drift"] + (["seasonal naive"] if season else [])
    for peer in naive + (["damped ETS", "Theta"] if peers else []):
        t0 = time.perf_counter()
        fc = {k: _peer_forecast(hist[k], h, peer, season) for k in ids}
        score(peer, fc, time.perf_counter() - t0)
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
    p.add_argument("--tag", default="", help="suffix of the result files")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    options = json.loads(args.options)
    warnings.simplefilter("ignore")
    sets, fc_rows = [], []
    for name in args.sets:
        if name in PANELS:
            fc_rows += run_panel(name, options, args.seed, not args.no_peers)
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
            for peer in ("1-NN DTW", "MiniRocket"):
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
