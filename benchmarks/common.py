"""Shared pieces of the benchmarks: fresh-process workers, peak RSS, tables."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

from vlrnn.memory import peak_rss_mb
from vlrnn.memory import rss_mb as now_rss_mb

# peak and current resident memory, MB (Linux: VmHWM / VmRSS; see vlrnn.memory)
rss_mb = peak_rss_mb
current_rss_mb = now_rss_mb


def spawn(script: str, args: Sequence, timeout: float) -> dict:
    """Run ``script --worker *args`` in a fresh process; its last stdout line is JSON."""
    cmd = [sys.executable, script, "--worker", *map(str, args)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["?"]
        return {"error": f"exit {res.returncode}: {tail[0][:120]}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def medians(results: Dict[tuple, List[dict]], keys: Sequence[str]) -> List[dict]:
    """One row per configuration: the median of each key over its successful runs."""
    rows = []
    for (method, T), runs in results.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            rows.append(dict(method=method, T=T, error=runs[0]["error"]))
            continue
        row = dict(method=method, T=T, reps=len(ok))
        for k in keys:
            vals = [r[k] for r in ok if r.get(k) is not None]
            row[k] = statistics.median(vals) if vals else None
        rows.append(row)
    return rows


def add_shape_arguments(p) -> None:
    """The sizes a dense block-timing run takes (the scan models' floor and before/after
    scripts): ``--hidden`` (several), ``--steps``, ``--batch``, ``--input``, ``--layers``,
    ``--block``, ``--threads``, ``--repeats``."""
    p.add_argument("--hidden", type=int, nargs="+", default=[128, 256])
    p.add_argument("--steps", type=int, default=4096)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--input", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)


def write_table(text: str, out: str | None) -> None:
    """Print a finished table and write it to ``out`` (when given), as every benchmark
    script ends."""
    if out:
        Path(out).write_text(text + "\n")
    print("\n" + text)


def markdown(rows: List[dict], columns: Sequence[tuple]) -> str:
    """A markdown table; ``columns`` are (header, key, format) triples."""
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |",
             "|" + "|".join("---:" if f else "---" for _, _, f in columns) + "|"]
    for r in rows:
        if "error" in r:
            cells = [str(r.get(k, "")) if not f else "" for _, k, f in columns]
            cells[len(cells) // 2] = r["error"]
        else:
            cells = [("" if r.get(k) is None else (format(r[k], f) if f else str(r[k])))
                     for _, k, f in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_loglog(rows: List[dict], styles: Sequence[tuple], memory_label: str, title: str,
                path) -> bool:
    """Memory (``extra_mb``) and time (``seconds``) against T on log-log axes, one line
    per (method, line style) in ``styles``; False when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_m, ax_t) = plt.subplots(1, 2, figsize=(10, 4))
    for method, style in styles:
        pts = sorted((r["T"], r) for r in rows if r["method"] == method and not r.get("error"))
        if pts:
            Ts = [t for t, _ in pts]
            ax_m.plot(Ts, [max(r["extra_mb"], 1.0) for _, r in pts], style, label=method)
            ax_t.plot(Ts, [r["seconds"] for _, r in pts], style, label=method)
    for ax, label in ((ax_m, memory_label), (ax_t, "time (s)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return True


def run_worker(args: Sequence[str], worker, check) -> int:
    """The child side of :func:`spawn` (``--worker ... THREADS``): ``check T`` or
    ``METHOD T REP``, run with THREADS torch threads; the result printed as JSON."""
    import torch
    torch.set_num_threads(int(args[-1]))
    if args[0] == "check":
        print(json.dumps(check(int(args[1]))))
    else:
        print(json.dumps(worker(args[0], int(args[1]), int(args[2]))))
    return 0
