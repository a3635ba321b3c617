"""The one picture of ``vlrnn demo``: three panels, one per part (matplotlib, optional)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional


def save_figure(path: Path, recall: Dict[str, Any], memory: Dict[str, Any],
                lm: Dict[str, Any]) -> Optional[Path]:
    """Write the PNG; ``None`` (and nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))

    epochs = range(1, len(recall["exact"]["accs"]) + 1)
    a.plot(epochs, recall["exact"]["accs"], "o-", label="exact BPTT (vlrnn)")
    a.plot(epochs, recall["truncated"]["accs"], "s-",
           label=f"truncated BPTT (window {recall['window']})")
    a.axhline(recall["chance"], color="grey", ls=":", label="chance")
    a.set(title=f"1. recall a cue {recall['delay']:,} steps back", xlabel="epoch",
          ylabel="held-out accuracy", ylim=(0, 1.05))
    a.set_xticks(list(epochs))
    a.legend(loc="center right", fontsize=8)

    T, k = memory["T"], memory["plain_measured"]
    b.loglog(T, memory["vlrnn"], "o-", label="vlrnn (measured)")
    b.loglog(T[:k], memory["plain"][:k], "s-", label="plain BPTT (measured)")
    if k < len(T):
        b.loglog(T[k - 1:], memory["plain"][k - 1:], "s--", mfc="none",
                 label="plain BPTT (estimated)")
    b.set(title="2. peak memory of one backward", xlabel="sequence length (steps)",
          ylabel="MB above the process start")
    b.legend(fontsize=8)

    secs, bits = zip(*lm["curve"])
    c.plot(secs, bits, "o-", label="byte LSTM, exact BPTT over whole files")
    c.axhline(lm["baseline"], color="grey", ls=":", label="byte frequencies (no context)")
    c.set(title="3. language model on the standard library", xlabel="training seconds",
          ylabel="held-out bits per byte")
    c.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
