"""Classify every step: the Python token class of each character of the standard library.

Each ``.py`` file of the installed standard library is one series, one step per character
(hundreds to thousands of steps; always available offline). The class of a step is the
kind of token the character belongs to, from Python's own ``tokenize`` module: ``name``,
``keyword``, ``op``, ``number``, ``string`` (f-strings' literal parts included),
``comment``, or ``space`` (whitespace, newlines, indentation). The features of a step
describe only that one character (its 7 ASCII bits and a few flags), so whether an ``x``
belongs to a name, a string or a comment can only come from the characters before it,
sometimes far back (a docstring opened 2,000 characters earlier). Through the one-call
API::

    result = vlrnn.pack_and_train(frame, id_col="file", time_col="pos", target_cols="token",
                                  task="classification")
    result.evaluate(test_frame)          # accuracy, majority_accuracy

Baselines on the same held-out files: the majority class, and a context-free rule that
gives each character the class it has most often in the training files.

    python examples/step_classification.py            # the README figure (defaults)
    python examples/step_classification.py --quick    # smoke run, a few seconds

(The README run took about 4 minutes on a 2-core machine: ``epochs=None`` chooses 11
epochs here, the 3-million-row budget of ``pack_and_train``, at its per-step lr 1e-2.)
"""
from __future__ import annotations

import argparse
import io
import keyword
import sys
import time
import tokenize
from collections import Counter, defaultdict
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from lowlevel_tasks import accuracy, fit_step_classifier, majority_accuracy, one_call_supports  # noqa: E402

import vlrnn  # noqa: E402
from vlrnn.cli.demo import split_files, stdlib_files  # noqa: E402

STRING_TOKENS = {tokenize.STRING} | {getattr(tokenize, n) for n in
                                     ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END",
                                      "TSTRING_START", "TSTRING_MIDDLE", "TSTRING_END")
                                     if hasattr(tokenize, n)}
FLAGS = {"lower": str.islower, "upper": str.isupper, "digit": str.isdigit,
         "space": lambda c: c in " \t", "newline": lambda c: c == "\n",
         "quote": lambda c: c in "'\"", "hash": lambda c: c == "#",
         "nonascii": lambda c: ord(c) > 127}
FEATURES = [f"bit{k}" for k in range(7)] + list(FLAGS)


def token_classes(text: str) -> np.ndarray:
    """``(len(text),)`` token class of every character (``text`` uses ``\\n`` newlines)."""
    labels = np.full(len(text), "space", dtype=object)
    starts = np.r_[0, np.flatnonzero(np.frombuffer(text.encode("utf-32-le"), np.uint32)
                                     == ord("\n")) + 1]
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.NAME:
            kind = "keyword" if keyword.iskeyword(tok.string) else "name"
        elif tok.type == tokenize.OP:
            kind = "op"
        elif tok.type == tokenize.NUMBER:
            kind = "number"
        elif tok.type == tokenize.COMMENT:
            kind = "comment"
        elif tok.type in STRING_TOKENS:
            kind = "string"
        else:
            continue            # NEWLINE, NL, INDENT, DEDENT, ENDMARKER: whitespace
        (r0, c0), (r1, c1) = tok.start, tok.end
        labels[starts[r0 - 1] + c0:starts[r1 - 1] + c1] = kind
    return labels


def char_features(text: str) -> np.ndarray:
    """``(len(text), 15)`` float: the low 7 bits of each character's code (127 for
    non-ASCII) and the flags of ``FLAGS``; nothing about the characters around it."""
    codes = np.minimum(np.frombuffer(text.encode("utf-32-le"), np.uint32), 127)
    bits = (codes[:, None] >> np.arange(7)) & 1
    flags = np.array([[f(c) for f in FLAGS.values()] for c in text], dtype=float)
    return np.concatenate([bits.astype(float), flags.reshape(len(text), len(FLAGS))], 1)


def load_files(paths: List[Path]) -> Tuple[List[str], List[np.ndarray], List[np.ndarray]]:
    """Names, features and token classes of the files that tokenize cleanly."""
    names, xs, ys = [], [], []
    for p in paths:
        try:
            text = p.read_bytes().decode("utf-8").replace("\r\n", "\n")
            y = token_classes(text)
        except (UnicodeDecodeError, SyntaxError, tokenize.TokenError):
            continue
        names.append(f"{p.parent.name}/{p.name}")    # unique: several __init__.py
        xs.append(char_features(text))
        ys.append(y)
    return names, xs, ys


def to_frame(names, xs, ys) -> pd.DataFrame:
    """Long frame: ``file``, ``pos``, the 15 features, ``token`` (text)."""
    parts = []
    for name, x, y in zip(names, xs, ys):
        part = pd.DataFrame(x, columns=FEATURES)
        part.insert(0, "pos", np.arange(len(x)))
        part.insert(0, "file", name)
        part["token"] = y
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def pick(paths: List[Path], n: int, min_kb: float, max_kb: float) -> List[Path]:
    """``n`` files between ``min_kb`` and ``max_kb``, spread over the sorted list."""
    ok = [p for p in paths if min_kb * 1024 <= p.stat().st_size <= max_kb * 1024]
    if len(ok) <= n:
        return ok
    return [ok[i] for i in np.linspace(0, len(ok) - 1, n).round().astype(int)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=120)
    p.add_argument("--n-test", type=int, default=40)
    p.add_argument("--max-kb", type=float, default=6.0, help="largest file size, KB")
    p.add_argument("--epochs", type=int, default=None,
                   help="default: pack_and_train's own (12 with --api lowlevel)")
    p.add_argument("--hidden", type=int, default=None,
                   help="default: pack_and_train's own (64 with --api lowlevel)")
    p.add_argument("--lr", type=float, default=None,
                   help="default: pack_and_train's own (3e-3 with --api lowlevel)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--api", choices=["auto", "one-call", "lowlevel"], default="auto",
                   help="one-call: vlrnn.pack_and_train(task='classification'); lowlevel: "
                        "vlrnn.block_loss (lowlevel_tasks.py); auto: one-call if available")
    p.add_argument("--quick", action="store_true", help="a few seconds: 8 small files")
    args = p.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test, args.max_kb, args.epochs = 6, 3, 1.5, 2
    torch.set_num_threads(args.threads)
    api = args.api
    if api == "auto":
        api = "one-call" if one_call_supports("task") else "lowlevel"

    train_paths, test_paths = split_files(stdlib_files(), val_fraction=0.2)
    tr_names, tr_x, tr_y = load_files(pick(train_paths, args.n_train, 0.5, args.max_kb))
    te_names, te_x, te_y = load_files(pick(test_paths, args.n_test, 0.5, args.max_kb))
    lengths = [len(x) for x in tr_x + te_x]
    counts = Counter(np.concatenate(tr_y).tolist())
    print(f"standard library: {len(tr_x)} training and {len(te_x)} test files, "
          f"{min(lengths):,}-{max(lengths):,} characters ({sum(lengths):,} in all)")
    print("training classes: " + ", ".join(f"{k} {v / sum(counts.values()):.1%}"
                                            for k, v in counts.most_common()))

    # context-free baseline: each character's most frequent class in the training files
    by_char = defaultdict(Counter)
    for x, y in zip(tr_x, tr_y):
        for code, label in zip((x[:, :7] @ (1 << np.arange(7))).astype(int), y):
            by_char[code][label] += 1
    _, base = majority_accuracy(np.concatenate(tr_y), np.concatenate(te_y))
    top = counts.most_common(1)[0][0]
    rule = [np.array([by_char[c].most_common(1)[0][0] if by_char[c] else top
                      for c in (x[:, :7] @ (1 << np.arange(7))).astype(int)], dtype=object)
            for x in te_x]
    rule_acc = accuracy(np.concatenate(rule), np.concatenate(te_y))

    given = {k: v for k, v in dict(epochs=args.epochs, hidden_size=args.hidden,
                                   lr=args.lr).items() if v is not None}
    low = dict(epochs=args.epochs or 12, hidden=args.hidden or 64, lr=args.lr or 3e-3)
    n_epochs = given.get("epochs", "default") if api == "one-call" else low["epochs"]
    t0 = time.perf_counter()
    if api == "one-call":
        print(f"training through vlrnn.pack_and_train(..., task='classification'), "
              f"{n_epochs} epochs")
        result = vlrnn.pack_and_train(to_frame(tr_names, tr_x, tr_y), id_col="file",
                                      time_col="pos", target_cols="token",
                                      feature_cols=FEATURES, task="classification",
                                      seed=args.seed, **given)
        n_epochs = len(result.history)          # epochs run (the defaults choose them)
        print(result.history.tail(3).to_string(index=False))
        metrics = result.evaluate(to_frame(te_names, te_x, te_y))
        print("evaluate():", {k: round(float(v), 4) for k, v in metrics.items()})
        acc, base = float(metrics["accuracy"]), float(metrics["majority_accuracy"])
    else:
        print(f"training through vlrnn.block_loss (lowlevel_tasks.py), {n_epochs} epochs")
        predict = fit_step_classifier(tr_x, tr_y, **low, seed=args.seed)
        acc = accuracy(np.concatenate(predict(te_x)), np.concatenate(te_y))
    seconds = time.perf_counter() - t0
    print(f"\nheld-out per-character accuracy {acc:.3f}; majority class {base:.3f}; "
          f"context-free rule (each character's most frequent class) {rule_acc:.3f}; "
          f"trained in {seconds:.0f} s via the {api} API")
    print(f"RESULT token classes accuracy {acc:.3f}, majority {base:.3f}, context-free "
          f"{rule_acc:.3f} ({api} API, {n_epochs} epochs, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
