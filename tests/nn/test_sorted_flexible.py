"""The sorted flexible layer equals a flexible layer whose neurons, weights and Adam moments are
explicitly permuted at every re-sort (the rank formulation needs no physical permutation)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.engine.child_run import synthetic
from widthlab.engine.optim import BankOptimizer
from widthlab.engine.trainer import TrainConfig, train
from widthlab.errors import UsageError
from widthlab.nn import MLP, ModelSpec
from widthlab.nn.bank import MLPBank
from widthlab.nn.flexible import cutoff_integral
from widthlab.nn.sorted_flexible import SortedFlexibleCutoff, ranks_within
from widthlab.store import Store

D, N, C = 20, 12, 10
LR, X0_LR, LAM, K, X0 = 1e-2, 0.5, 1e-2, 1.0, 7.0


class PermutedReference:
    """One flexible MLP in plain torch: cut-off over the neuron *position*; at every re-sort the
    neurons are physically reordered with their weights and Adam state."""

    def __init__(self, seed: int, score: str, every: int, decay: float):
        mlp = MLP([D, N, C], seed=seed)
        self.w1, self.b1 = (p.detach().clone().requires_grad_() for p in
                            (mlp.layers[0].weight, mlp.layers[0].bias))
        self.w2, self.b2 = (p.detach().clone().requires_grad_() for p in
                            (mlp.layers[1].weight, mlp.layers[1].bias))
        self.x0 = torch.tensor(X0, requires_grad=True)
        self.opt = torch.optim.Adam([{"params": [self.w1, self.b1, self.w2, self.b2], "lr": LR},
                                     {"params": [self.x0], "lr": X0_LR}])
        self.score, self.every, self.decay = score, every, decay
        self.perm = torch.arange(N)  # perm[p]: the original neuron now at position p
        self.s1, self.s2 = torch.zeros(N, dtype=torch.float64), torch.zeros(N, dtype=torch.float64)
        self.count, self.steps, self.smoothed, self.windows = 0, 0, None, 0

    def resort(self):
        if self.score == "act_std":
            mean = self.s1 / self.count
            w = (self.s2 / self.count - mean ** 2).clamp(min=0).sqrt()
        else:
            w = (self.s1 / self.steps).abs()
        self.smoothed = w if self.windows == 0 else self.decay * self.smoothed + \
            (1 - self.decay) * w
        self.windows += 1
        order = torch.argsort(-self.smoothed, stable=True)  # ties keep the current order
        with torch.no_grad():
            for p, dim in ((self.w1, 0), (self.b1, 0), (self.w2, 1)):
                p.copy_(p.index_select(dim, order))
                for key in ("exp_avg", "exp_avg_sq"):
                    st = self.opt.state[p][key]
                    st.copy_(st.index_select(dim, order))
        self.smoothed = self.smoothed[order]
        self.perm = self.perm[order]
        self.s1.zero_()
        self.s2.zero_()
        self.count = self.steps = 0

    def step(self, step, x, y):
        if step > 0 and step % self.every == 0:
            self.resort()
        a = F.relu(x @ self.w1.T + self.b1)  # (B, N)
        a.retain_grad()
        s = torch.sigmoid(K * (self.x0 - torch.arange(N, dtype=torch.float32)))
        logits = (a * s) @ self.w2.T + self.b2
        ce = F.cross_entropy(logits, y)
        loss = ce + (LAM * cutoff_integral(self.x0.double(), K, float(N))).float()
        self.opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            self.count += len(y)
            self.steps += 1
            if self.score == "act_std":
                self.s1 += a.sum(0).double()
                self.s2 += (a * a).sum(0).double()
            else:
                self.s1 += (a * a.grad).sum(0).double()
        self.opt.step()
        return ce.item()


@pytest.mark.parametrize("score,decay", [("act_std", 0.5), ("taylor", 0.0)])
def test_rank_cutoff_equals_an_explicitly_permuted_model(score, decay):
    data = synthetic(n_train=480, d=D)
    every, steps = 3, 30
    bank = MLPBank([ModelSpec((N,), seed=3)], D, C)
    mod = SortedFlexibleCutoff(x0=X0, penalty=LAM, k=K, lr=X0_LR, score=score, every=every,
                               decay=decay)
    bank.add_modifier(mod)
    opt = BankOptimizer(bank, lr=LR)
    ref = PermutedReference(3, score, every, decay)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        idx = torch.randint(0, len(data.train), (32,), generator=g)
        x, y = data.train.x[idx], data.train.y[idx]
        mod.before_step(step)
        ce = bank.per_model_loss(bank(x), y)
        bank.zero_grad()
        (ce + bank.penalty()).sum().backward()
        mod.after_backward()
        opt.step()
        assert ce[0].item() == pytest.approx(ref.step(step, x, y), rel=1e-5, abs=1e-6)
    # the ordering really moved, and the bank's ranks are the reference's positions
    assert not torch.equal(ref.perm, torch.arange(N))
    rank = mod.rank.long()
    assert torch.equal(rank[ref.perm], torch.arange(N))
    # every weight, put back in the original order, equals the bank's
    back = torch.argsort(ref.perm)
    exported = bank.export(0)
    torch.testing.assert_close(exported.layers[0].weight, ref.w1.detach()[back], rtol=1e-4,
                               atol=1e-5)
    torch.testing.assert_close(exported.layers[0].bias, ref.b1.detach()[back], rtol=1e-4,
                               atol=1e-5)
    torch.testing.assert_close(exported.layers[1].weight, ref.w2.detach()[:, back], rtol=1e-4,
                               atol=1e-5)
    assert mod.x0[0].item() == pytest.approx(ref.x0.item(), rel=1e-5)


def test_ranks_within_each_model_follow_the_score_and_keep_ties_in_place():
    score = torch.tensor([0.5, 2.0, 0.5, 1.0, 3.0, 3.0, 0.0], dtype=torch.float64)
    previous = torch.tensor([0, 1, 2, 3, 2, 1, 0], dtype=torch.float64)
    unit_model = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    starts = torch.tensor([0, 4])
    r = ranks_within(score, previous, unit_model, starts)
    # model 0: 2.0 first, 1.0, then the tied 0.5s in their previous order; model 1: the tied
    # 3.0s keep their previous order (unit 5 was ahead), then 0.0
    assert r.tolist() == [2, 0, 3, 1, 1, 0, 2]


def test_resorting_puts_the_least_important_neurons_beyond_the_cutoff(tmp_path):
    data = synthetic(n_train=640, d=D)
    spec = [ModelSpec((24,), seed=0, variant="sorted-flexible"),
            ModelSpec((16,), seed=1, variant="sorted-flexible")]
    mods = []

    def make():
        mods.append(SortedFlexibleCutoff(x0=8.0, penalty=1e-3, score="act_std", every=5,
                                         decay=0.0))
        return mods[-1]

    run_id = train(spec, TrainConfig(dataset="synthetic", epochs=2, batch_size=32, device="cpu",
                                     stats_epochs="none", eval_splits=("test",)),
                   tmp_path, data=data, progress=False, modifiers=[make])
    mod = mods[-1]
    st = Store(tmp_path)
    for m, (a, b) in enumerate(mod.slices):
        rank = st.array(run_id, m, "rank", epoch=2)
        assert sorted(rank.tolist()) == list(range(b - a))  # a permutation of 0..N-1
        np.testing.assert_array_equal(rank, mod.rank[a:b].numpy())
        # the smoothed score decreases along the ranks: the cut-off scale follows importance
        by_rank = mod.smoothed[a:b][torch.argsort(mod.rank[a:b])]
        assert bool((by_rank[:-1] >= by_rank[1:]).all())
        scale = mod.scale().detach()[a:b]
        assert bool((scale[torch.argsort(mod.rank[a:b])].diff() <= 0).all())
    met = st.metrics(run_id)
    assert (met[met.name == "resorts"].value > 0).all()


def test_settings_are_checked_and_enter_the_fingerprint():
    with pytest.raises(UsageError, match="score must be one of"):
        SortedFlexibleCutoff(score="magic")
    with pytest.raises(UsageError, match="every must be"):
        SortedFlexibleCutoff(every=0)
    with pytest.raises(UsageError, match="decay"):
        SortedFlexibleCutoff(decay=1.0)
    with pytest.raises(UsageError, match="random_slope"):
        SortedFlexibleCutoff(random_slope=True)
    a = SortedFlexibleCutoff(penalty=1e-3, every=10).describe()
    b = SortedFlexibleCutoff(penalty=1e-3, every=20).describe()
    assert a != b and a["sorted_by"] == "act_std" and "rank" in a["scaler"]
