"""A store holding two finished variance-study runs on synthetic data named like the real
datasets (the report code cannot tell the difference), shared by the report tests."""

import pytest

from tests.engine.child_run import synthetic
from widthlab.data.tensors import DatasetSplits
from widthlab.studies import variance


def _named(name, seed):
    d = synthetic(seed=seed)
    return DatasetSplits(name, d.train, d.val, d.test, d.mean, d.std, d.seed)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    for name, seed in (("mnist", 0), ("fashion-mnist", 1)):
        variance.run(name, widths=[2, 4, 8, 16], seeds=3, epochs=2, store=root,
                     data=_named(name, seed), batch_size=32, device="cpu")
    return root
