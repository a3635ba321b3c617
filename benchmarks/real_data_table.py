"""Merge the ``benchmarks/real_data.py`` runs into one table and one plot.

    python benchmarks/real_data_table.py

reads ``benchmarks/results/real_data_<tag>.csv`` (the commands that wrote them are in
docs/benchmarks/real-data.md): ``clf_ls01_seedS`` and ``clf_ls01_rest_seedS`` (the
classification defaults since label smoothing), ``defaults`` (before it),
``defaults_reg``, ``classic`` (the one-call path before issue 21),
``bidirectional_seed0``, ``peers_seed0`` .. ``peers_seed2`` (the four aeon peers),
``panels_lastwin`` (forecast panels, peers on seed 0), ``panels_origins_<panel>`` and
their ``_seed1``/``_seed2`` runs, ``holt_ens3_*`` and ``holt_*`` (the forecast defaults
and one model with the holt anchor), and ``panels_global``; writes ``real_data.md`` and
``real_data.png`` there.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from real_data import PEERS, markdown

RESULTS = HERE / "results"
SEEDS = (0, 1, 2)


def read(tag: str) -> pd.DataFrame:
    return pd.read_csv(RESULTS / f"real_data_{tag}.csv")


def _seeded(tag: str, seed: int) -> str:
    return tag if seed == 0 else f"{tag}_seed{seed}"


def _label_smoothed(seed: int) -> pd.DataFrame:
    """The classification defaults since label smoothing 0.1 (ArrowHead and
    JapaneseVowels in one run, the other five sets in another), by set."""
    return pd.concat([read(f"clf_ls01_seed{seed}"), read(f"clf_ls01_rest_seed{seed}")]
                     ).set_index("set")


def classification() -> tuple[pd.DataFrame, str]:
    """The per-set table (seed 0) and a line of per-seed means."""
    ours = read("defaults").set_index("set")
    no_ls = ours["vlrnn"].copy()
    smoothed = _label_smoothed(0)
    ours.loc[smoothed.index, smoothed.columns] = smoothed
    # series regression's default recipe changed after that run (back to "classic"):
    # its row comes from the run of the final defaults
    reg = read("defaults_reg").set_index("set")
    ours.loc[reg.index, reg.columns] = reg
    before = read("classic").set_index("set")
    bi = read("bidirectional_seed0").set_index("set")
    peers = read("peers_seed0").set_index("set")
    cols = {"train/test": ours["train/test"], "metric": ours["metric"],
            "vlrnn defaults": ours["vlrnn"], "s": ours["vlrnn s"],
            "label smoothing 0": no_ls,
            "bidirectional": bi["vlrnn"], "bi s": bi["vlrnn s"],
            "before (issue 21)": before["vlrnn"]}
    for p in PEERS:
        cols[p] = peers[p]
        cols[f"{p} s"] = peers[f"{p} s"]
    cols["InceptionTime (published)"] = peers["InceptionTime (published)"]
    table = pd.DataFrame(cols).reset_index()
    clf = table["metric"] == "accuracy"
    parts = []
    for seed in SEEDS:
        v = _label_smoothed(seed)
        p = read(f"peers_seed{seed}").set_index("set")
        sets = table.loc[clf, "set"]
        means = {"vlrnn": v.loc[sets, "vlrnn"].mean(),
                 **{k: p.loc[sets, k].mean() for k in PEERS}}
        parts.append(f"seed {seed}: " + ", ".join(f"{k} {m:.3f}" for k, m in means.items()))
    line = "Mean accuracy over the classification sets, " + "; ".join(parts)
    return table, line


def _vlrnn_mase(tag: str) -> pd.Series:
    """vlrnn's MASE per panel in one results file."""
    r = read(tag)
    return r[r["method"] == "vlrnn defaults"].set_index("set")["mase"]


def panels() -> pd.DataFrame:
    """Forecast MASE/sMAPE, the last ``h`` values held out, seed 0: the defaults
    (``anchor="holt"``, an ensemble of 3), the peers, and vlrnn with one model, with
    ``anchor="last"`` (one model) and with ``scale="global"``."""
    cols = ["set", "method", "mase", "smape", "seconds", "n", "h"]
    last = read("panels_lastwin").dropna(subset=["mase"])[cols]
    peers = last[last["method"] != "vlrnn defaults"]
    ens = read("holt_ens3_lastwin_seed0").dropna(subset=["mase"])
    ens = ens[ens["method"] == "vlrnn defaults"][cols]
    holt = read("holt_lastwin_seed0").dropna(subset=["mase"])
    holt = holt[holt["method"] == "vlrnn defaults"][cols].assign(method="vlrnn ensemble=1")
    last = last[last["method"] == "vlrnn defaults"].assign(method="vlrnn anchor='last'")
    glob = read("panels_global").dropna(subset=["mase"])
    glob = glob[glob["method"] == "vlrnn defaults"].assign(method="vlrnn scale='global'")
    return pd.concat([ens, holt, peers, last, glob[cols]]).sort_values(["set", "mase"])


def origins() -> pd.DataFrame:
    """MASE averaged over rolling origins: vlrnn's defaults (``anchor="holt"``, an
    ensemble of 3) on seeds 0-2, with one model, with ``anchor="last"`` (one model), and
    under the earlier validation split (20% of the series), and every other method
    (seed 0)."""
    out = []
    for panel in ("fertility", "macro", "grunfeld"):
        base = read(f"panels_origins_{panel}").dropna(subset=["mase"])
        row = {"set": panel, "origins": int(base["origins"].iloc[0])}
        for seed in SEEDS:
            row[f"vlrnn seed {seed}"] = float(
                _vlrnn_mase(f"holt_ens3_origins_{panel}_seed{seed}")[panel])
        for seed in SEEDS:
            row[f"ensemble=1 seed {seed}"] = float(
                _vlrnn_mase(f"holt_origins_{panel}_seed{seed}")[panel])
        for seed in SEEDS:
            row[f"anchor last seed {seed}"] = float(
                _vlrnn_mase(_seeded(f"panels_origins_{panel}", seed))[panel])
        for seed in SEEDS:
            row[f"series split seed {seed}"] = float(
                _vlrnn_mase(_seeded(f"panels_origins_seriessplit_{panel}", seed))[panel])
        for _, r in base[base["method"] != "vlrnn defaults"].iterrows():
            row[r["method"]] = r["mase"]
        out.append(row)
    return pd.DataFrame(out)


def main() -> int:
    table, means = classification()
    with open(RESULTS / "real_data.md", "w") as f:
        f.write("# Real data against the peers (merged by benchmarks/real_data_table.py)\n\n")
        f.write(markdown(table) + "\n\n" + means + "\n\n")
        f.write("Forecast panels, the last h values held out (seed 0):\n\n")
        f.write(markdown(panels()) + "\n\n")
        f.write("Forecast panels, MASE averaged over rolling origins h steps apart:\n\n")
        f.write(markdown(origins()) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    clf = table[table["metric"] == "accuracy"]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    cols = ["before (issue 21)", "vlrnn defaults", "bidirectional", *PEERS]
    clf.set_index("set")[cols].plot.bar(ax=ax, width=0.85)
    ax.set_ylim(0.4, 1.02)
    ax.set_ylabel("test accuracy")
    ax.legend(loc="lower right", fontsize=7, ncol=2)
    ax.set_title("pack_and_train defaults vs peers, archive splits, seed 0")
    fig.tight_layout()
    fig.savefig(RESULTS / "real_data.png", dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
