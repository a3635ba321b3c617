"""``vlrnn demo``: its three parts and the summary line (``--quick``), and its pieces."""
from __future__ import annotations

import importlib.util
import re

import torch

from vlrnn import cli
from vlrnn.cli import recall
from vlrnn.cli._demo_lm import length_batches, unigram_bits
from vlrnn.cli._demo_memory import estimate_plain

SUMMARY = re.compile(r"^summary: bits/byte (\d+\.\d\d) vs baseline (\d+\.\d\d); exact (\d\.\d\d) "
                     r"vs truncated (\d\.\d\d) \(chance (\d\.\d\d)\); peak RSS (\d+) MB; (\d+) s$")


def test_quick_demo_runs_three_parts_and_ends_with_the_summary(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    m = SUMMARY.match(lines[-1])
    assert m, lines[-1]
    bits, base, exact, trunc, chance = (float(v) for v in m.groups()[:5])
    assert 3.0 < base < 7.0 and bits > 0 and chance == 0.25
    assert 0 <= trunc <= 1 and 0 <= exact <= 1
    assert "1. exact vs truncated" in out and "2. peak memory" in out and "3. byte-level" in out
    assert "trained on the longest file" in out
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "demo.png").stat().st_size > 10_000
    else:
        assert "figure skipped: matplotlib is not installed" in out


def test_length_batches_keep_the_byte_budget_and_every_file_once():
    lengths = [5, 300, 40, 41, 1000, 7, 260, 3000]
    batches = length_batches(lengths, max_bytes=600)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 600
    assert [7] in batches  # the 3,000-byte file alone: longer than the budget


def test_unigram_baseline_is_the_entropy_of_byte_frequencies():
    train = [torch.tensor([1, 1, 2, 2] * 50)]
    val = [torch.tensor([0, 1, 2, 1, 2])]
    bits = unigram_bits(train, val)
    # frequencies (add-one): bytes 1 and 2 at 101/456 each, the held-out steps 1, 2, 1, 2
    assert abs(bits - (-torch.log2(torch.tensor(101 / 456.0)).item())) < 1e-9


def test_recall_validation_labels_are_balanced_so_constant_answers_score_chance():
    _, label = recall.make_batch(64, 30, torch.Generator().manual_seed(0), balanced=True)
    assert torch.bincount(label, minlength=recall.K).tolist() == [16] * recall.K
    x, label = recall.make_batch(8, 30, torch.Generator().manual_seed(1))
    cue_steps = x[:, :, :recall.K].abs().sum(-1).nonzero()[:, 0]
    assert len(cue_steps) == 8 and int(cue_steps.max()) < recall.CUE_WINDOW
    cue_class = x[:, :, :recall.K].amax(0).argmax(-1)   # which cue channel fired, per sequence
    assert cue_class.tolist() == label.tolist()


def test_plain_bptt_estimate_is_the_line_through_its_measured_points():
    curve = {"T": [100, 200, 400], "plain": [10.0, 20.0, 40.0], "plain_measured": 2,
             "slope_mb_per_step": 0.1, "vlrnn": [5.0, 5.0, 5.0]}
    assert estimate_plain(curve, 1000) == 20.0 + 0.1 * 800
