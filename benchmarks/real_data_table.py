"""Merge the ``benchmarks/real_data.py`` runs into one table and one plot.

    python benchmarks/real_data_table.py

reads ``benchmarks/results/real_data_{defaults,defaults_reg,peers,peers_a,classic,
panels,panels_grunfeld,panels_global}.csv`` (see docs/benchmarks.md, "Real data against the peers", for the
commands that wrote them) and writes ``real_data.md`` and ``real_data.png`` there.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from real_data import markdown

RESULTS = HERE / "results"


def main() -> int:
    def read(tag: str) -> pd.DataFrame:
        return pd.read_csv(RESULTS / f"real_data_{tag}.csv")

    ours = read("defaults").set_index("set")
    # series regression's default recipe changed after that run (back to "classic"):
    # its row comes from the run of the final defaults
    reg = read("defaults_reg").set_index("set")
    ours.loc[reg.index, reg.columns] = reg
    before = read("classic").set_index("set")
    peers = pd.concat([read("peers_a"), read("peers")]).drop_duplicates("set").set_index("set")
    table = pd.DataFrame({
        "train/test": ours["train/test"], "metric": ours["metric"],
        "vlrnn defaults": ours["vlrnn"], "s": ours["vlrnn s"],
        "before (issue 21)": before["vlrnn"], "1-NN DTW": peers["1-NN DTW"],
        "DTW s": peers["1-NN DTW s"], "MiniRocket": peers["MiniRocket"],
        "MiniRocket s": peers["MiniRocket s"],
        "InceptionTime (published)": peers["InceptionTime (published)"]})
    table = table.reset_index()
    panels = pd.concat([read("panels"), read("panels_grunfeld")]).dropna(subset=["mase"])[
        ["set", "method", "mase", "smape", "seconds", "n", "h"]]
    glob = read("panels_global").dropna(subset=["mase"])
    glob = glob[glob["method"] == "vlrnn defaults"].assign(method="vlrnn scale='global'")
    panels = pd.concat([panels, glob[panels.columns]]).sort_values(["set", "mase"])
    clf = table[table["metric"] == "accuracy"]
    means = clf[["vlrnn defaults", "1-NN DTW", "MiniRocket"]].mean()
    with open(RESULTS / "real_data.md", "w") as f:
        f.write("# Real data against the peers (merged by benchmarks/real_data_table.py)\n\n")
        f.write(markdown(table) + "\n\n")
        f.write("Mean accuracy over the classification sets: "
                + ", ".join(f"{k} {v:.3f}" for k, v in means.items()) + "\n\n")
        f.write(markdown(panels) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    fig, ax = plt.subplots(figsize=(8, 3.5))
    cols = ["before (issue 21)", "vlrnn defaults", "1-NN DTW", "MiniRocket"]
    clf.set_index("set")[cols].plot.bar(ax=ax, width=0.8)
    ax.set_ylim(0.4, 1.02)
    ax.set_ylabel("test accuracy")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("pack_and_train defaults vs peers, archive splits, seed 0")
    fig.tight_layout()
    fig.savefig(RESULTS / "real_data.png", dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
