"""vlrnn under Lightning's automatic optimisation: the same final weights as plain BPTT.

The LightningModule's ``training_step`` returns ``vlrnn.block_loss(...).loss`` on packed
ragged batches; Lightning calls ``.backward()`` on it, accumulates, clips and steps.
The reference is a hand-written loop with ``vlrnn.full_loss(...).loss.backward()`` (plain BPTT) doing the
same accumulation (loss / k), clipping (total norm) and SGD steps, in float64.
"""
from __future__ import annotations

import logging
import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader

import vlrnn
from vlrnn.data import collate_packed
from vlrnn.engine._bptt import block_outputs

from helpers import end_distributed_worker
from training_helpers import BLOCK, LR, build_model, max_rel_diff, mse, plain_loop, series

L = pytest.importorskip("lightning")  # pip install -e ".[test]" installs it


class SeqModule(L.LightningModule):
    """What a user writes: each step is one call of vlrnn (``plain=True``: plain BPTT)."""

    def __init__(self, model: nn.Module, plain: bool = False):
        super().__init__()
        self.model = model
        self.plain = plain

    def loss(self, batch):
        x, y = batch
        if self.plain:  # the reference inside Lightning: one call over the whole batch
            return vlrnn.full_loss(self.model, mse, x, y).loss
        return vlrnn.block_loss(self.model, mse, x, y, block_len=BLOCK).loss

    def training_step(self, batch, batch_idx):
        return self.loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss(batch), batch_size=len(batch[0].sorted_indices))

    def predict_step(self, batch, batch_idx):
        y, state = block_outputs(self.model, batch[0], block_len=BLOCK)
        return y, state

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR)


def loader(items, batch_size=2):
    return DataLoader(items, batch_size=batch_size, shuffle=False, collate_fn=collate_packed)


def trainer(tmp_path, **options) -> "L.Trainer":
    options.setdefault("accelerator", "cpu")
    options.setdefault("devices", 1)
    return L.Trainer(default_root_dir=str(tmp_path), logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, **options)


@pytest.fixture(autouse=True)
def _quiet():
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*GPU available but not used.*")
        yield


def test_accumulate_and_clip_match_plain_bptt(tmp_path):
    items = series(8)
    module = SeqModule(build_model())
    # clip at 0.05: the gradient norms here are ~0.3-1, so clipping changes every step
    trainer(tmp_path, max_epochs=2, accumulate_grad_batches=2, gradient_clip_val=0.05,
            precision="64-true").fit(module, loader(items))
    ref = plain_loop(build_model(), [[b] for b in loader(items)], epochs=2, accumulate=2,
                     clip=0.05)
    unclipped = plain_loop(build_model(), [[b] for b in loader(items)], epochs=2, accumulate=2)
    assert max_rel_diff(module.model, ref) < 1e-10
    assert max_rel_diff(unclipped, ref) > 1e-3  # the clipping did act: the test can fail
    assert max_rel_diff(build_model(), ref) > 1e-3  # and training moved the weights


def test_validation_and_prediction_steps(tmp_path):
    items = series(6, seed=2)
    module = SeqModule(build_model())
    t = trainer(tmp_path, precision="64-true")
    # validation runs under torch.inference_mode: block_loss streams the blocks
    got = t.validate(module, loader(items), verbose=False)[0]["val_loss"]
    model = build_model()
    with torch.no_grad():
        want = torch.stack([vlrnn.full_loss(model, mse, x, y).loss for x, y in loader(items)])
    assert abs(got - want.mean().item()) < 1e-12 * want.mean().item()

    preds = t.predict(module, loader(items))
    assert len(preds) == 3
    for (y, (h, c)), (x, _) in zip(preds, loader(items)):
        with torch.no_grad():
            y_ref, (h_ref, c_ref) = model(x)
        assert torch.equal(y.batch_sizes, y_ref.batch_sizes)
        assert torch.equal(y.unsorted_indices, y_ref.unsorted_indices)
        for a, b in ((y.data, y_ref.data), (h, h_ref), (c, c_ref)):
            assert (a - b).abs().max().item() < 1e-12


def test_bf16_mixed_matches_plain_bptt_to_bf16_tolerance(tmp_path):
    items = series(8, dtype=torch.float32)
    runs = {}
    for plain in (False, True):
        module = SeqModule(build_model(torch.float32), plain=plain)
        trainer(tmp_path, max_epochs=2, precision="bf16-mixed").fit(module, loader(items))
        runs[plain] = module.model
    start = build_model(torch.float32)
    moved = max_rel_diff(runs[True], start)
    # bf16 keeps 8 bits of mantissa: agreement to 1% of each weight tensor's largest
    # entry (1.4e-3 seen), far inside how far training moved them (1.7 seen)
    assert max_rel_diff(runs[False], runs[True]) < 1e-2
    assert moved > 5e-2
    # and the bf16 run is bf16 rounding away from float32 plain BPTT (9e-4 seen): near,
    # but not float32-near, so autocast did act
    ref = plain_loop(build_model(torch.float32), [[b] for b in loader(items)], epochs=2)
    assert 1e-5 < max_rel_diff(runs[False], ref) < 2e-2


# -- DDP: two CPU processes (gloo), each given its own ragged batches -----------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_items(rank: int):
    return series(8, seed=3)[rank::2]  # different lengths, so different numbers of blocks


def _ddp_worker(rank: int, port: int, root: str, queue) -> None:
    # As torchrun would set them: Lightning then joins these processes instead of
    # launching its own.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
                      RANK=str(rank), LOCAL_RANK=str(rank), NODE_RANK="0")
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    try:
        module = SeqModule(build_model())
        t = L.Trainer(default_root_dir=root, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu", devices=2, strategy="ddp", max_epochs=2,
                      accumulate_grad_batches=2, gradient_clip_val=0.05, precision="64-true",
                      use_distributed_sampler=False)
        t.fit(module, loader(_rank_items(rank)))
        queue.put((rank, {k: v.tolist() for k, v in module.model.state_dict().items()}))
    except BaseException as e:  # report instead of leaving the parent waiting
        queue.put((rank, repr(e)))
        raise
    finally:
        end_distributed_worker()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_ddp_two_processes_match_plain_bptt(tmp_path):
    # fork: the children start with lightning already imported (spawn re-imports it:
    # 10-20 s per process on a 2-core machine); nothing here has started threads
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, port, str(tmp_path), queue)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        results = dict(queue.get(timeout=180) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    for rank in range(2):
        assert isinstance(results[rank], dict), f"rank {rank} failed: {results[rank]}"
    assert all(p.exitcode == 0 for p in procs)

    # DDP averages the ranks' gradients: each step is plain BPTT on the mean of the
    # ranks' batch losses (both ranks' batches, each loss halved)
    per_rank = [list(loader(_rank_items(r))) for r in range(2)]
    steps = [[per_rank[0][i], per_rank[1][i]] for i in range(len(per_rank[0]))]
    ref = plain_loop(build_model(), steps, epochs=2, accumulate=2, clip=0.05, loss_scale=0.5)
    for rank in range(2):
        got = build_model()
        got.load_state_dict({k: torch.tensor(v) for k, v in results[rank].items()})
        assert max_rel_diff(got, ref) < 1e-10, f"rank {rank}"
    alone = plain_loop(build_model(), [[b] for b in per_rank[0]], epochs=2, accumulate=2, clip=0.05)
    assert max_rel_diff(alone, ref) > 1e-3  # rank 0 alone differs: the all-reduce did act
