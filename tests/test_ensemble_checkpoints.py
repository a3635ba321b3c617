"""Ensembles checkpoint and resume member by member (vlrnn.training._members), and
forecasts train an ensemble of 3 by default."""
import numpy as np
import pandas as pd
import pytest

import vlrnn
from vlrnn.training._members import member_files


def frame(n=6, seed=0):
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(n):
        T = int(rng.integers(15, 30))
        u = rng.normal(size=T)
        parts.append(pd.DataFrame({"id": f"s{s}", "t": np.arange(T), "u": u,
                                   "y": np.cumsum(u) + s}))
    return pd.concat(parts, ignore_index=True)


OPTS = dict(id_col="id", time_col="t", target_cols="y", hidden_size=8, num_layers=1,
            val_fraction=0.0, progress=False)


def test_member_files_one_member_passes_everything_through(tmp_path):
    got = member_files(0, 1, tmp_path / "c", tmp_path / "l", tmp_path / "c")
    assert got == {"checkpoint_dir": tmp_path / "c", "log_dir": tmp_path / "l",
                   "resume": tmp_path / "c"}


def test_member_files_gives_each_member_a_folder(tmp_path):
    got = member_files(2, 3, tmp_path, None, None)
    assert got == {"checkpoint_dir": tmp_path / "member2", "log_dir": None, "resume": None}
    (tmp_path / "member0").mkdir()
    (tmp_path / "member0" / "last.pt").write_bytes(b"x")
    assert member_files(0, 3, tmp_path, None, tmp_path)["resume"] == tmp_path / "member0"
    assert member_files(1, 3, tmp_path, None, tmp_path)["resume"] is None   # not started
    with pytest.raises(ValueError, match="resumes from its checkpoint folder"):
        member_files(0, 3, tmp_path, None, tmp_path / "member0" / "last.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="member0 has no last.pt$"):
        member_files(0, 3, tmp_path / "empty", None, tmp_path / "empty")
    (tmp_path / "empty" / "last.pt").write_bytes(b"x")     # a single model's folder
    with pytest.raises(FileNotFoundError, match="resume it with ensemble=1"):
        member_files(0, 3, tmp_path / "empty", None, tmp_path / "empty")


def test_an_ensemble_resumed_after_any_member_equals_one_run(tmp_path):
    df = frame()
    whole = vlrnn.pack_and_train(df, ensemble=2, epochs=3, **OPTS)
    ckpt = tmp_path / "run"
    # two epochs, then a second call to 3: every member resumes from its own epoch 2
    vlrnn.pack_and_train(df, ensemble=2, epochs=2, checkpoint_dir=ckpt, **OPTS)
    assert (ckpt / "member0" / "last.pt").is_file() and (ckpt / "member1" / "last.pt").is_file()
    again = vlrnn.pack_and_train(df, ensemble=2, epochs=3, checkpoint_dir=ckpt, resume=ckpt,
                                 **OPTS)
    pd.testing.assert_frame_equal(again.predict(df), whole.predict(df))
    assert again.history["member"].tolist() == [0, 0, 0, 1, 1, 1]
    # killed before member 1 began: member 0 loads its finished run, member 1 starts anew
    import shutil
    shutil.rmtree(ckpt / "member1")
    third = vlrnn.pack_and_train(df, ensemble=2, epochs=3, checkpoint_dir=ckpt, resume=ckpt,
                                 **OPTS)
    pd.testing.assert_frame_equal(third.predict(df), whole.predict(df))
    np.testing.assert_allclose(third.history["train_loss"], whole.history["train_loss"])


def test_forecasts_default_to_an_ensemble_of_three_other_tasks_to_one():
    df = frame()
    fc = vlrnn.pack_and_train(df[["id", "t", "y"]], horizon=2, epochs=1, **OPTS)
    assert fc.config["ensemble"] == 3
    assert sorted(set(fc.history["member"])) == [0, 1, 2]
    step = vlrnn.pack_and_train(df, epochs=1, **OPTS)
    assert step.config["ensemble"] == 1 and "member" not in step.history
    one = vlrnn.pack_and_train(df[["id", "t", "y"]], horizon=2, epochs=1, ensemble=1, **OPTS)
    assert one.config["ensemble"] == 1
