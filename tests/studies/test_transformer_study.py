"""The transformer study end to end on a small synthetic text (seconds): every step stored,
the static models have the gated runs' widths, the per-neuron stds match a float64 numpy
reference, the tables and verdicts are computed from the numbers; reproduce runs it once on
its own corpus; pure verdict functions on hand-made tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import widthlab.reproduce as rp
from widthlab.data.text import tokenize
from widthlab.errors import UsageError
from widthlab.store import Store
from widthlab.studies import get_study
from widthlab.studies.transformer import verdicts as vd
from widthlab.studies.transformer.compute import _calib, ffn_stds, load_final
from widthlab.studies.transformer.config import QUICK

TEXT = "".join(f"{w} and {v} went to the {x} to fetch a pail of water.\n"
               for w, v, x in zip(["Jack", "Jill", "Tom", "Ann"] * 60,
                                  ["Jill", "Jack", "Ann", "Tom"] * 60,
                                  ["hill", "well", "mill", "dell", "sea"] * 48, strict=True))
TINY = dict(n_embd=16, block_size=16, n_ffn=24, ffn_widths=(8, 24), steps=20, chunk=10,
            batch_size=4, eval_windows=8, final_windows=16, stat_windows=8, fracs=(0.5,),
            methods=("obs", "magnitude", "random"), finetune_steps=3, frontier_windows=16,
            prices=(3e-4,), hc_prices=(3e-4,), sample_chars=20,
            fold_at=0.5)  # the gated runs fold their gates after chunk 1 (load_final reads them)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    store = tmp_path_factory.mktemp("t") / "store"
    corpus = tokenize(TEXT, name="rhymes", source="test")
    study = get_study("transformer")
    runs = study.run("rhymes", QUICK.replace(**TINY), store=store, data=corpus, device="cpu")
    st = Store(store)
    return study, st, runs, corpus, study.tables(st, {"rhymes": {"manifest": runs["manifest"]}})


def test_every_step_is_stored_and_static_models_have_the_learned_widths(done):
    study, st, runs, _, tables = done
    t = tables["rhymes"]
    assert {"dense", "sweep-8-s0", "sweep-24-s0", "gated-l1-0.0003", "static-l1-0.0003",
            "gated-hard_concrete-0.0003", "stats", "frontier", "samples"} <= set(runs.runs)
    assert runs["dense"] == runs["sweep-24-s0"]  # one run: same config and label
    for kind in ("l1", "hard_concrete"):
        ckpt = st.latest_checkpoint(runs[f"gated-{kind}-0.0003"])[1]
        assert ckpt["state"]["folded"] and not [k for k in ckpt["model"] if "gate" in k]
        gated = load_final(st, runs[f"gated-{kind}-0.0003"])
        static = load_final(st, runs[f"static-{kind}-0.0003"])
        ffn = [b.mlp.fc.out_features for b in gated.blocks]
        assert ffn == [b.mlp.fc.out_features for b in static.blocks]
        assert [b.attn.n_head for b in gated.blocks] == [b.attn.n_head for b in static.blocks]
        row = t["gated"][t["gated"].kind == kind].iloc[0]
        assert row.ffn_params == sum(ffn) * 2 * 16  # fc row + proj column per unit
    assert list(t["sweep"].ffn_width) == [8, 24]
    assert len(t["samples"]) >= 1 and t["samples"].step.iloc[0] == "dense"
    assert len(t["samples"].text.iloc[0]) == 21  # the prompt character and 20 generated


def test_ffn_stds_match_a_numpy_float64_reference(done):
    study, st, runs, corpus, tables = done
    p = QUICK.replace(**TINY)
    model = load_final(st, runs["sweep-24-s0"])
    x, _ = _calib(p, corpus)
    pre = {}
    hooks = [b.mlp.fc.register_forward_hook(lambda m, a, o, i=i: pre.__setitem__(i, o))
             for i, b in enumerate(model.blocks)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    got = ffn_stds(model, x)
    erf = np.vectorize(math.erf)
    for b, z in pre.items():
        z = z.double().flatten(0, 1).numpy()
        gelu = 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))
        np.testing.assert_allclose(got[b], gelu.std(axis=0), rtol=1e-5, atol=1e-7)
    stored = st.arrays(runs["stats"], "std/1")
    names = list(st.models(runs["stats"]).name)
    np.testing.assert_allclose(stored[names.index("sweep-24-s0")], got[1], rtol=1e-12)
    stats = tables["rhymes"]["stats"]
    assert list(stats.width) == [8, 24] and stats.shapiro_w.between(0, 1).all()


def test_frontier_rows_and_verdicts_are_computed(done):
    study, st, runs, _, tables = done
    f = tables["rhymes"]["frontier"]
    cut = f[(f.group == "ffn") & (f.method == "obs")].iloc[0]
    assert cut.ffn_units == 2 * 12 and np.isfinite(cut.loss) and np.isfinite(cut.loss_ft)
    assert set(f.method) >= {"dense", "obs", "magnitude", "random", "allocation (obs)"}
    verdicts = study.verdicts(tables)["rhymes"]
    assert len(verdicts) == 9 and all(v.text for v in verdicts)
    budget = tables["rhymes"]["budget"]
    assert "20 AdamW steps" in budget and f"{20 * 4 * 16:,} training tokens" in budget


def test_reproduce_runs_it_once_on_its_own_corpus():
    jobs = rp.jobs_for("quick", ["mnist", "fashion-mnist"], ["transformer"])
    assert [(j.study, j.dataset) for j in jobs] == [("transformer", "shakespeare")]


def test_verdicts_on_hand_made_tables():
    front = pd.DataFrame({"group": ["dense", "ffn", "ffn", "ffn", "heads", "heads"],
                          "method": ["dense", "obs", "magnitude", "random", "obs", "random"],
                          "frac": [1.0, 0.5, 0.5, 0.5, 0.5, 0.5],
                          "loss": [1.88, 1.90, 2.03, 2.12, 1.95, 1.94],
                          "loss_ft": [np.nan, 1.89, 1.93, 1.95, 1.91, 1.92],
                          "widths": ["", "", "", "", "", ""]})
    v = vd.obs_wins(front, "ffn", 0.5, within=0.03)
    assert v.holds and v.numbers["best_other"] == "magnitude"
    assert not vd.obs_wins(front, "ffn", 0.5, within=0.01).holds  # 0.02 above dense
    assert not vd.obs_wins(front, "heads", 0.5).holds  # random is lower
    gated = pd.DataFrame({"kind": ["l1", "l1"], "price": ["1e-7", "2e-7"],
                          "ffn_ratio": [1.5, 3.4], "val_loss": [1.89, 1.90],
                          "vs_dense": [0.005, 0.019], "vs_static": [-0.01, -0.002],
                          "dense_val_loss": [1.885, 1.885], "static_val_loss": [1.9, 1.902]})
    assert vd.learned_widths(gated).numbers["passing"] == ["l1"]
    assert not vd.learned_widths(gated.assign(vs_static=0.001)).holds
    sweep = pd.DataFrame({"ffn_width": [32, 128, 512, 2048], "val_loss": [2.0, 1.9, 1.885, 1.88]})
    assert vd.plateau(sweep).numbers["plateau"] == 512


def test_a_table_is_not_a_corpus(tmp_path):
    from widthlab.data.tensors import load_splits  # noqa: F401  (the tabular kind)

    study = get_study("transformer")

    class Table:  # a DatasetSplits stand-in: no vocabulary
        name = "table"

    with pytest.raises(UsageError, match="trains on text"):
        study.run("table", QUICK.replace(**TINY), store=tmp_path / "s", data=Table())


def test_cli_data_corpus_txt_trains_on_the_users_text(tmp_path):
    from widthlab.cli import main

    text = tmp_path / "rhymes.txt"
    text.write_text(TEXT, encoding="utf-8")
    args = ["study", "transformer", "--profile", "quick", "--experiment", "dense",
            "--n-embd", "16", "--block-size", "16", "--n-ffn", "8", "--steps", "10",
            "--chunk", "10", "--final-windows", "8", "--store", str(tmp_path / "s"), "-q"]
    assert main([*args, "--data", str(text)]) == 0
    (dataset,) = set(Store(tmp_path / "s").runs().dataset)
    assert dataset == "rhymes"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00 not text")
    assert main([*args, "--data", str(bad)]) == 2


def test_fold_at_is_checked_against_the_price_window_and_chunks():
    with pytest.raises(UsageError, match="fold_at"):
        QUICK.replace(fold_at=0.3).validate()  # the price is on until 0.4
    with pytest.raises(UsageError, match="fold_at"):
        QUICK.replace(fold_at=0.6).validate()  # step 36 is inside chunk 2 (30 steps a chunk)
    assert QUICK.replace(fold_at=0.5).train(0, 1e-5).fold_at == 0.5
    assert QUICK.replace(fold_at=0.5).train(0).fold_at is None  # static and dense runs
