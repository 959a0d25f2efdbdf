"""Item 5: ordinary mistakes are one line, not a traceback (bad seeds, bad output paths, a
cache or checkpoints folder that is a file, a read-only cache or export folder)."""

from __future__ import annotations

import pytest

from tests.faults.conftest import make_store, one_line_error, snapshot
from widthlab.errors import StoreError
from widthlab.store import Store


def test_negative_data_seed(tmp_path, capsys):
    one_line_error(capsys, ["train", "--data-seed", "-1", "--store", str(tmp_path)], (2,),
                   "--data-seed must be >= 0, got -1; give 0 or a larger seed")


@pytest.mark.parametrize("where", ["proc", "under-a-file"])
def test_report_output_path(tmp_path, capsys, where):
    st = make_store(tmp_path / "s")
    before = snapshot(st.root)
    (tmp_path / "afile").write_text("mine")
    out = "/proc/r.html" if where == "proc" else str(tmp_path / "afile" / "r.html")
    words = "files cannot be created there" if where == "proc" else "afile is a file"
    one_line_error(capsys, ["report", "--store", str(st.root), "-o", out], (2,),
                   "cannot write to the report's folder", words, "choose another -o/--out")
    assert (tmp_path / "afile").read_text() == "mine" and snapshot(st.root) == before


def test_cache_that_is_a_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("mine")
    monkeypatch.setenv("WIDTHLAB_CACHE", str(tmp_path / "afile"))
    monkeypatch.delenv("WIDTHLAB_DATA", raising=False)
    one_line_error(capsys, ["data", "fetch", "mnist", "-q"], (2,),
                   "cannot write to the dataset cache", "afile is a file",
                   "set WIDTHLAB_CACHE to a writable folder")
    assert (tmp_path / "afile").read_text() == "mine"


def test_read_only_cache(tmp_path, monkeypatch, mounts, capsys):
    cache = tmp_path / "cache"
    (cache / "mnist").mkdir(parents=True)
    ro = mounts.read_only(cache)
    monkeypatch.setenv("WIDTHLAB_CACHE", str(ro))
    monkeypatch.delenv("WIDTHLAB_DATA", raising=False)
    one_line_error(capsys, ["data", "fetch", "mnist", "-q"], (2,),
                   "cannot write to the dataset cache", "files cannot be created there")


def test_checkpoints_folder_is_a_file(tmp_path):
    st = make_store(tmp_path / "s", checkpoint=False, done=False)
    (st.root / "checkpoints").write_text("mine")
    with pytest.raises(StoreError, match="a file stands where the store needs a folder") as e:
        st.save_checkpoint("run-a", 3, {})
    assert "; move that file away and rerun" in str(e.value) and "\n" not in str(e.value)
    assert (st.root / "checkpoints").read_text() == "mine"


@pytest.mark.realdata
def test_cli_train_with_checkpoints_a_file(real_cache, tmp_path, capsys):
    store = tmp_path / "s"
    store.mkdir()
    (store / "checkpoints").write_text("mine")
    one_line_error(capsys, ["train", "--widths", "16", "--seeds", "1", "--train-size", "256",
                            "--quiet", "--device", "cpu", "--store", str(store)], (1,),
                   "checkpoints", "a file stands where the store needs a folder")
    assert Store(store).runs()["epochs_done"].tolist() == [0]


def test_export_to_a_read_only_folder(tmp_path, mounts, capsys):
    st = make_store(tmp_path / "s")
    (tmp_path / "out").mkdir()
    ro = mounts.read_only(tmp_path / "out")
    one_line_error(capsys, ["runs", "export", "run-a", "--out", str(ro), "--store",
                            str(st.root)], (2,), "cannot write to the export folder",
                   "files cannot be created there", "choose a writable --out")
    assert not list((tmp_path / "out").iterdir())
