"""A TokenRun is identified by a RunSpec like every other run: every TokenConfig field, the
model, the corpus and the code are hashed; the device and the label are not."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json

import pytest
import torch

from tests.engine.child_token_run import CONFIG, GPT_CFG, TEXT, corpus, half_open, make_run
from widthlab.data.text import tokenize
from widthlab.engine.lifecycle import run_trainable
from widthlab.engine.spec import RunSpec
from widthlab.engine.token_run import LOSS, TokenConfig, TokenRun
from widthlab.errors import WidthlabError
from widthlab.studies.transformer.models import gpt_model

# one changed value per TokenConfig field (CONFIG: steps 40, chunk 10, price on 25-50%)
CHANGES = {"steps": 80, "chunk": 20, "batch_size": 5, "lr": 2e-3, "min_lr": 2e-4,
           "warmup_steps": 6, "weight_decay": 0.05, "betas": (0.9, 0.95), "grad_clip": 0.5,
           "gate_lr": 0.04, "price": 2e-3, "price_from": 0.0, "price_until": 0.75,
           "shrink": False, "fold_at": 0.5, "seed": 1, "data_seed": 1, "eval_windows": 9,
           "final_windows": None}


def test_the_spec_hashes_model_config_loss_data_and_code():
    run = make_run()
    spec = run.spec
    assert isinstance(spec, RunSpec) and spec.kind == "token"
    assert run.run_id == spec.run_id() == f"tok.gpt-toy-{spec.key()[:12]}"
    assert spec.placement == {"device": "cpu"} and spec.label == "tok:gpt"
    # the key, recomputed by hand from the run's parts
    train = {f.name: getattr(CONFIG, f.name) for f in dataclasses.fields(TokenConfig)}
    hashed = {"kind": "token", "data": corpus().content_id, "models": [run.describe],
              "train": train, "modifiers": [{"loss": LOSS}], "code": spec.code}
    blob = json.dumps(hashed, sort_keys=True, default=str)
    assert spec.key() == hashlib.sha256(blob.encode()).hexdigest()
    assert len(spec.code) == 64 and spec.data == corpus().content_id


def test_placement_and_label_leave_the_id_alone():
    run = make_run()
    key = run.spec.key()
    relabelled = TokenRun(run.factory, corpus(), CONFIG, label="other:name", device="cpu")
    assert relabelled.spec.key() == key
    assert relabelled.run_id == f"other.name-toy-{key[:12]}" != run.run_id
    run.device = torch.device("cuda", 1)  # where it would run: placement only
    moved = run._spec(run.spec.code)
    assert moved.placement == {"device": "cuda:1"} and moved.key() == key
    assert moved.run_id() == run.run_id


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_every_config_field_changes_the_id(name):
    base = make_run().spec
    changed = make_run(cfg=dataclasses.replace(CONFIG, **{name: CHANGES[name]})).spec
    assert changed.train[name] != base.train[name]
    assert changed.key() != base.key() and changed.run_id() != base.run_id()


def test_every_field_is_hashed_and_covered():
    assert TokenConfig.hashed_fields() == [f.name for f in dataclasses.fields(TokenConfig)]
    assert set(CHANGES) == set(TokenConfig.hashed_fields())


def test_model_data_and_code_change_the_id():
    base = make_run().spec
    cfg = {**GPT_CFG, "vocab_size": corpus().vocab_size}
    other_init = TokenRun(functools.partial(half_open, cfg, 1, "l1"), corpus(), CONFIG,
                          label="tok:gpt", device="cpu").spec
    ungated = TokenRun(functools.partial(gpt_model, cfg, 0), corpus(), CONFIG, label="tok:gpt",
                       device="cpu").spec
    other_text = tokenize(TEXT + "and one more line.\n", name="toy", source="test")
    other_cfg = {**GPT_CFG, "vocab_size": other_text.vocab_size}
    other_data = TokenRun(functools.partial(half_open, other_cfg, 0, "l1"), other_text, CONFIG,
                          label="tok:gpt", device="cpu").spec
    assert other_data.data != base.data
    keys = {base.key(), other_init.key(), ungated.key(), other_data.key(),
            base.replace(code="0" * 64).key()}
    assert len(keys) == 5
    described = make_run()
    described.describe = {"gpt": cfg, "seed": 0}
    assert described._spec(base.code).key() != base.key()


def test_the_lifecycle_refuses_a_token_run_whose_id_is_not_its_specs(tmp_path):
    run = make_run()
    run.run_id = "tok.gpt-toy-000000000000"
    with pytest.raises(WidthlabError, match="is not its spec's"):
        run_trainable(run, tmp_path / "store")
    assert not (tmp_path / "store").exists()
