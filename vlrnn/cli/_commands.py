"""Command line: ``vlrnn train DATA.csv ...``, ``vlrnn predict MODEL.pt DATA.csv`` and
``vlrnn demo``.

Errors caused by the input (a missing file or column, bad values) are reported as one
line ``vlrnn: error: ...`` on stderr with exit status 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import List, Optional

# --cell: torch's fused RNNs, then vlrnn.models.MODELS by name (listed here, not imported:
# the parser is built without importing torch; tests/test_scan_models_training.py checks)
CELLS = ["lstm", "gru", "rnn", "lru", "mamba", "mingru", "minlstm", "qrnn"]

# Raised for bad input (files, columns, values) rather than bugs: shown as one line.
USER_ERRORS = (ValueError, KeyError, OSError,
               FloatingPointError, ImportError)

DESCRIPTION = """\
Exact backpropagation through time for recurrent networks on very long,
variable-length sequences, in memory that does not grow with the length."""

EPILOG = """\
examples:
  vlrnn train sensors.csv --id-col unit --time-col t --target load
  vlrnn train sales.parquet --id-col store --time-col date --target units \\
      --features price promo --cell gru --epochs 30 --out runs/sales
  vlrnn train sales.parquet --id-col store --time-col date --target units --resume
  vlrnn train ecg.csv --id-col record --time-col t --series-target label
  vlrnn train machines.csv --id-col unit --time-col t --target state --task classification
  vlrnn train load.csv --id-col unit --time-col t --target load --horizon 24
  vlrnn predict runs/load/model.pt new.csv --out predictions.csv [--forecast]
  vlrnn demo --minutes 1

Run 'vlrnn COMMAND --help' for the options of a command."""

TRAIN_DESCRIPTION = """\
Train a recurrent model on a long-format table (one row per series id and time step;
series may have any lengths): the target column(s) at every step (numbers: regression;
text/categories/bool, or --task classification: classes), one label per series
(--series-target COL), or the next H steps (--horizon H). Features and numeric targets
are standardised on the training series, whole series are held out for validation,
and every epoch is checkpointed. Missing (empty) targets are left out of the loss."""

TRAIN_EPILOG = """\
output (in --out, default runs/<data file name>):
  model.pt     trained model, scalers and config (vlrnn.TrainedModel.load)
  history.csv  one row per epoch: train_loss, val_loss, seconds, steps_per_s, lr,
               skipped (steps skipped for a non-finite loss with skip_nonfinite),
               val_accuracy or val_mae/val_rmse (target units)
  loss.png     loss curves (if matplotlib is installed)
  last.pt      checkpoint after the last epoch (--resume continues from it)
  best.pt      checkpoint of the epoch with the lowest validation loss
  events.out.tfevents.*  TensorBoard scalars (if tensorboard is installed;
               --no-tensorboard to skip): tensorboard --logdir DIR

example:
  vlrnn train sensors.csv --id-col unit --time-col t --target load --epochs 20"""


PREDICT_DESCRIPTION = """\
Run a trained model over a table. Per-step models write one row per input row (the
input's id and time columns, then the predictions); series models one row per series
(id, prediction, one probability per class); --forecast the H steps after each
series' last time stamp (id, time, targets)."""


def build_parser() -> argparse.ArgumentParser:
    """The ``vlrnn`` argument parser with its subcommands.

    >>> from vlrnn.cli import build_parser
    >>> args = build_parser().parse_args(["demo", "--quick"])
    >>> args.command, args.quick
    ('demo', True)
    """
    from .. import __version__
    from . import demo

    parser = argparse.ArgumentParser(
        prog="vlrnn", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vlrnn {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    tr = sub.add_parser("train", parents=[common], help="train a model on a CSV or Parquet table",
                        description=TRAIN_DESCRIPTION, epilog=TRAIN_EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    tr.add_argument("data", metavar="DATA", help="a .csv or .parquet file, one row per "
                    "(series id, time step)")
    cols = tr.add_argument_group("columns")
    cols.add_argument("--id-col", required=True, metavar="C", help="column naming the series")
    cols.add_argument("--time-col", required=True, metavar="C",
                      help="column ordering the steps of a series (numbers or dates)")
    cols.add_argument("--target", nargs="+", metavar="C", default=None,
                      help="target column(s) to predict at every step (or to forecast)")
    cols.add_argument("--series-target", metavar="C", default=None,
                      help="column holding one label per series (constant within each)")
    cols.add_argument("--features", nargs="+", metavar="C", default=None,
                      help="feature column(s) (default: every other column)")
    task = tr.add_argument_group("task")
    task.add_argument("--task", choices=["classification", "regression"], default=None,
                      help="default: from the target's values (text/categories/bool: "
                           "classification, decimals: regression; integers need --task)")
    task.add_argument("--horizon", type=int, default=None, metavar="H",
                      help="forecast the next H steps of the target(s) at every step")
    task.add_argument("--season", type=int, default=None, metavar="M",
                      help="with --horizon: the series' season length (e.g. 12 for monthly "
                           "data); evaluation adds the seasonal naive baseline")
    model = tr.add_argument_group("model")
    model.add_argument("--cell", default="lstm", choices=CELLS,
                       help="recurrent cell or model (default: lstm; the others are "
                            "vlrnn.models.MODELS)")
    model.add_argument("--hidden-size", type=int, default=64, metavar="N",
                       help="hidden units per layer (default: 64)")
    model.add_argument("--num-layers", type=int, default=2, metavar="N",
                       help="stacked recurrent layers (default: 2)")
    model.add_argument("--bidirectional", action="store_true",
                       help="with --series-target and cell lstm, gru or rnn: read each whole "
                            "series both ways")
    train = tr.add_argument_group("training")
    train.add_argument("--block-len", type=int, default=256, metavar="N",
                       help="time steps per BPTT block; memory grows with it, not with the "
                            "series length (default: 256)")
    train.add_argument("--batch-size", type=int, default=16, metavar="N",
                       help="series per batch (default: 16)")
    train.add_argument("--epochs", type=int, default=None, metavar="N",
                       help="epochs in total, counting resumed ones (default: about 600 "
                            "optimizer steps within 3 million training rows, with early "
                            "stopping on the validation loss)")
    train.add_argument("--lr", type=float, default=None,
                       help="Adam learning rate (default: 1e-2; 3e-3 with --series-target)")
    train.add_argument("--val-fraction", type=float, default=None, metavar="F",
                       help="share of series held out for validation, 0 for none (default: "
                            "pack_and_train's 'auto': 0.2, none for series tasks under 300 "
                            "series)")
    train.add_argument("--scale", choices=["default", "global", "series", "none"],
                       default="default",
                       help="global: one mean/std per column from the training series; "
                            "series: each series by its own (past-only for per-step tasks "
                            "and forecasts); none; default: the task's (series for "
                            "--horizon, else global)")
    train.add_argument("--anchor", choices=["default", "holt", "last"], default="default",
                       help="what a --horizon forecast (scale series) is the change from: "
                            "holt, a damped-trend smoothing forecast of each series' past; "
                            "last, the last value (default: holt)")
    train.add_argument("--ensemble", type=int, default=None, metavar="N",
                       help="train N models from seeds seed, seed + 1, ... and average "
                            "them (default: 3 with --horizon, else 1)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument("--device", default=None,
                       help="cpu or cuda (default: cuda if available)")
    run = tr.add_argument_group("run")
    run.add_argument("--out", default=None, metavar="DIR",
                     help="output and checkpoint folder (default: runs/<data file stem>)")
    run.add_argument("--resume", action="store_true",
                     help="continue from the last checkpoint in --out (verified; a damaged "
                          "last.pt falls back to last.prev.pt, one epoch earlier)")
    run.add_argument("--trust-file", action="store_true",
                     help="allow full unpickling of the --resume checkpoint, which can run "
                          "code it holds: only for files you trust (vlrnn's never need it)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--no-tensorboard", action="store_true",
                     help="no TensorBoard logs in --out (written when tensorboard is installed)")
    tr.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", parents=[common],
                        help="predict (or forecast) with a model written by 'vlrnn train'",
                        description=PREDICT_DESCRIPTION,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("model", metavar="MODEL", help="model.pt written by 'vlrnn train'")
    pr.add_argument("data", metavar="DATA", help="a .csv or .parquet file with the id, time "
                    "and feature columns the model was trained on")
    pr.add_argument("--out", default=None, metavar="FILE",
                    help="where to write the predictions (.csv or .parquet; default: "
                         "predictions.csv next to DATA)")
    pr.add_argument("--forecast", action="store_true",
                    help="the H steps after each series' end (a model trained with --horizon)")
    pr.add_argument("--evaluate", action="store_true",
                    help="also print the scores against DATA's targets and a naive baseline")
    pr.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    pr.add_argument("--trust-file", action="store_true",
                    help="allow full unpickling of MODEL and importing the cell class it "
                         "names, which can run code: only for files you trust")
    pr.add_argument("--cell-class", default=None, metavar="FILE.py:CLASS",
                    help="the custom cell class of a model trained with one "
                         "(pack_and_train(cell=MyCell)), as FILE.py:CLASS or MODULE:CLASS; "
                         "checked against the name MODEL records")
    pr.set_defaults(func=cmd_predict)

    dm = sub.add_parser("demo", parents=[common],
                        help="train a byte-level LSTM on Python's standard library",
                        description=(demo.__doc__ or "").strip().splitlines()[0] or None)
    demo.add_arguments(dm)
    dm.set_defaults(func=demo.run)
    return parser


def read_table(path: Path):
    """A ``.csv`` or ``.parquet`` file as a DataFrame."""
    import pandas as pd

    if not path.exists():
        raise FileNotFoundError(f"data file {path} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"data file {path} is a folder; expected a .csv or .parquet file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path)
        except ImportError as err:
            raise ImportError(f"reading {path} needs a Parquet engine: pip install pyarrow "
                              f"({err})") from None
    raise ValueError(f"data file {path} has suffix {suffix or '(none)'!r}; expected .csv or "
                     ".parquet")


def _check_positive(args: argparse.Namespace) -> None:
    for name in ("hidden_size", "num_layers", "block_len", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.epochs is not None and args.epochs < 0:
        raise ValueError(f"--epochs must be >= 0, got {args.epochs}")
    if args.val_fraction is not None and not 0 <= args.val_fraction < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")


def save_loss_plot(history, path: Path) -> Optional[Path]:
    """Train/validation loss per epoch as a PNG; ``None`` without matplotlib."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no GUI backend needed
    except ImportError:
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(history["epoch"], history["train_loss"], marker="o", label="train")
    if history["val_loss"].notna().any():
        ax.plot(history["epoch"], history["val_loss"], marker="o", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (scaled targets)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def tensorboard_dir(out: Path) -> Optional[Path]:
    """``out`` when TensorBoard logs can be written (said on stdout), else ``None`` with a
    line saying how to get them."""
    from ..training._tensorboard import INSTALL_HINT, tensorboard_available

    if not tensorboard_available():
        print(f"TensorBoard logs: off (tensorboard is not installed: {INSTALL_HINT})")
        return None
    print(f"TensorBoard logs: {out} (open with: tensorboard --logdir {out})", flush=True)
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from ..training._pipeline import pack_and_train

    _check_positive(args)
    data = Path(args.data)
    out = Path(args.out) if args.out else Path("runs") / data.stem
    df = read_table(data)
    if args.resume and not (out / "last.pt").is_file():
        raise FileNotFoundError(f"--resume: no checkpoint {out / 'last.pt'} to continue from "
                                "(drop --resume to start a new run, or point --out at the run)")
    if (args.target is None) == (args.series_target is None):
        raise ValueError("name what to predict: --target COL (every step, or with --horizon) "
                         "or --series-target COL (one label per series)")
    print(f"read {len(df)} rows, {df[args.id_col].nunique() if args.id_col in df else '?'} "
          f"series from {data}", flush=True)
    log_dir = None if args.no_tensorboard else tensorboard_dir(out)
    result = pack_and_train(
        df, id_col=args.id_col, time_col=args.time_col, target_cols=args.target,
        series_target=args.series_target, task=args.task, horizon=args.horizon,
        season=args.season, feature_cols=args.features, cell=args.cell, hidden_size=args.hidden_size,
        num_layers=args.num_layers, bidirectional=args.bidirectional,
        block_len=args.block_len, batch_size=args.batch_size, epochs=args.epochs, lr=args.lr, seed=args.seed,
        val_fraction="auto" if args.val_fraction is None else args.val_fraction,
        scale={"default": True, "none": None}.get(args.scale, args.scale),
        anchor=None if args.anchor == "default" else args.anchor, ensemble=args.ensemble,
        resume=out if args.resume else None, trusted=args.trust_file, checkpoint_dir=out,
        progress=not args.no_progress, device=args.device, log_dir=log_dir)
    model_path = result.save(out / "model.pt")
    hist = result.history
    hist.to_csv(out / "history.csv", index=False)
    plot = save_loss_plot(hist, out / "loss.png") if len(hist) else None

    print(f"trained {result!r}")
    if len(hist):
        last = hist.iloc[-1]
        line = f"epoch {int(last['epoch'])}: train loss {last['train_loss']:.4g}"
        if hist["val_loss"].notna().any():
            line += f", validation loss {last['val_loss']:.4g}"
            best = hist.loc[hist["val_loss"].idxmin()]
            line += f" (best {best['val_loss']:.4g} at epoch {int(best['epoch'])})"
        print(line)
        scores = [c for c in hist.columns if c.startswith("val_") and c != "val_loss"]
        if scores:
            print("validation: " + ", ".join(f"{c[4:]} {last[c]:.4g}" for c in scores))
    print(f"model:   {model_path}")
    print(f"history: {out / 'history.csv'}")
    if plot is not None:
        print(f"plot:    {plot}")
    if log_dir is not None:
        print(f"curves:  tensorboard --logdir {log_dir}")
    print(f"resume:  add --resume --out {out} (with a larger --epochs) to train further")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..training._trained import TrainedModel
    from ._cell_class import load_cell_class

    model_path, data = Path(args.model), Path(args.data)
    if not model_path.is_file():
        raise FileNotFoundError(f"model file {model_path} does not exist (vlrnn train writes "
                                "model.pt in its --out folder)")
    cell_class = None if args.cell_class is None else load_cell_class(args.cell_class)
    model = TrainedModel.load(model_path, device=args.device, cell_class=cell_class,
                              trusted=args.trust_file)
    df = read_table(data)
    if args.forecast:
        res = model.forecast(df)
        index = False
    else:
        res = model.predict(df)
        if model.task.level == "series":
            index = True
        else:  # keep the input's id and time next to each row's prediction
            res = pd.concat([df[[model.task.id_col, model.task.time_col]], res], axis=1)
            index = False
    out = Path(args.out) if args.out else data.with_name("predictions.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".parquet", ".pq"):
        res.to_parquet(out, index=index)
    else:
        res.to_csv(out, index=index)
    print(f"{len(res)} rows -> {out}")
    if args.evaluate:
        scores = model.evaluate(df)
        print(", ".join(f"{k} {v:.4g}" for k, v in scores.items()))
    return 0


def _one_line(err: BaseException) -> str:
    # KeyError's str() is the repr of its key: show the message itself
    msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    msg = " ".join(str(msg).split())
    return msg or type(err).__name__


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``vlrnn`` console script (and ``python -m vlrnn``).

    >>> from vlrnn.cli import main
    >>> main(["--version"])                 # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    SystemExit: 0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("vlrnn: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"vlrnn: error: {_one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
