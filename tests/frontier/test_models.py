"""Group frontiers on real models: a ResNet trained on MNIST and a character GPT trained on
Shakespeare, both trained in the test (seconds); the applied cut against the predicted refit
and an independent numpy least-squares refit."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from widthlab.errors import UsageError
from widthlab.frontier import GROUP_METHODS
from widthlab.frontier.models import (
    apply_cut,
    collect,
    consumer_sites,
    cut_groups,
    group_frontier_of,
    model_frontier,
    model_loss,
)
from widthlab.nn import GPT, GPTConfig, GPTTrain, ResNet, ResNetConfig, train_gpt
from widthlab.units import build_graph

pytestmark = pytest.mark.usefixtures("one_thread")


def _cut_all(model, graph, kind, method, calib, ev, frac=0.5):
    m2, g2 = copy.deepcopy(model), copy.deepcopy(graph)
    names = [g.name for g in g2.groups if g.kind == kind]
    frs = cut_groups(m2, g2, {n: frac for n in names}, calib, method)
    return model_loss(m2, ev), frs, m2


# ------------------------------------------------------------------ (c) applied == predicted
def _lstsq_refit(x, w0, b0, keep_cols):
    """numpy float64: the consumer refitted on its kept input columns (intercept if b0)."""
    x = x.reshape(-1, x.shape[-1]).numpy()
    target = x @ w0.T + (0 if b0 is None else b0)
    a = x[:, keep_cols]
    if b0 is not None:
        a = np.hstack([a, np.ones((len(a), 1))])
    sol = np.linalg.lstsq(a, target, rcond=None)[0].T
    return (sol, None) if b0 is None else (sol[:, :-1], sol[:, -1])


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("kind", ["ffn", "heads"])
def test_applied_cut_is_the_predicted_and_the_least_squares_refit(kind, bias):
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=2, n_head=4, n_embd=16, n_ffn=24, block_size=8, vocab_size=11,
                    bias=bias)
    model = GPT(cfg).double().eval()
    for p in model.parameters():  # a non-trivial net: weights far from nanoGPT's tiny init
        p.data.normal_(0, 0.3)
    x = torch.randint(0, 11, (96, 8))
    y = torch.randint(0, 11, (96, 8))
    graph = build_graph(model, x[:2])
    grp = [g for g in graph.groups if g.kind == kind][1]  # the second block's
    k = grp.size // 2
    fr = group_frontier_of(model, graph, grp, (x[:64], y[:64]), (x[64:], y[64:]), "obs",
                           ks=[k], damp=1e-12)
    (site,) = fr.sites
    acts, _, _ = collect(model, [site], (x, y))
    xin = acts[site.module]  # the consumer's inputs in the uncut model, (B, T, N)
    m2, g2 = copy.deepcopy(model), copy.deepcopy(graph)
    apply_cut(m2, g2, fr, k)
    (site2,) = consumer_sites(m2, g2[grp.name])
    layer = dict(m2.named_modules())[site.module]
    assert layer.in_features == k * (site.col_units == 0).sum()
    out_cut = collect(m2, [site2], (x, y))[0][site.module]  # its inputs after the cut
    kept_units = fr.frontier.cuts[k].kept
    keep_cols = torch.nonzero(torch.isin(site.col_units, kept_units)).flatten()
    # upstream is untouched: the cut consumer reads exactly the kept columns
    np.testing.assert_allclose(out_cut.numpy(), xin[..., keep_cols].numpy(), rtol=0, atol=1e-12)
    w_pred, b_pred = fr.frontier.cuts[k].weights[0]
    got = layer(out_cut).detach().numpy()
    want = (xin.numpy() @ w_pred.numpy().T + (0 if b_pred is None else b_pred.numpy()))
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-6 * scale  # the model's consumer == the prediction
    w0 = site.layer.weight.detach().double().numpy()
    b0 = None if site.layer.bias is None else site.layer.bias.detach().numpy()
    calib_in = collect(model, [site], (x[:64], y[:64]))[0][site.module]
    w_ls, b_ls = _lstsq_refit(calib_in, w0, b0, keep_cols.numpy())
    np.testing.assert_allclose(layer.weight.detach().numpy(), w_ls, rtol=0,
                               atol=1e-6 * np.abs(w_ls).max())
    if bias:
        np.testing.assert_allclose(layer.bias.detach().numpy(), b_ls, rtol=0,
                                   atol=1e-6 * np.abs(b_ls).max())


def test_conv_cut_is_the_least_squares_refit():
    torch.manual_seed(1)
    model = ResNet(ResNetConfig(stage_widths=(4, 6), blocks=1, image_size=10)).double().eval()
    x = torch.randn(40, 1, 10, 10, dtype=torch.float64)
    y = torch.randint(0, 10, (40,))
    graph = build_graph(model, x[:2])
    fr = group_frontier_of(model, graph, "stages.1.0.conv1", (x[:24], y[:24]), None, "obs",
                           ks=[3], damp=1e-12)
    (site,) = fr.sites
    conv = site.layer
    m2, g2 = copy.deepcopy(model), copy.deepcopy(graph)
    apply_cut(m2, g2, fr, 3)
    keep = fr.frontier.cuts[3].kept.numpy()
    # reference: im2col by explicit loops, then numpy least squares on the kept channels
    xin = collect(model, [site], (x[:24], y[:24]))[0][site.module].numpy()  # (B, C, 5, 5)
    pad = np.pad(xin, ((0, 0), (0, 0), (1, 1), (1, 1)))
    rows = [pad[b, :, i:i + 3, j:j + 3].reshape(-1) for b in range(len(pad))
            for i in range(xin.shape[2]) for j in range(xin.shape[3])]
    rows = np.array(rows)  # (B*25, C*9), columns (c, kh, kw)
    w0 = conv.weight.detach().numpy().reshape(conv.out_channels, -1)
    cols = (keep[:, None] * 9 + np.arange(9)).reshape(-1)
    w_ls, _ = _lstsq_refit(torch.from_numpy(rows), w0, None, cols)
    got = dict(m2.named_modules())[site.module].weight.detach().numpy()
    np.testing.assert_allclose(got.reshape(conv.out_channels, -1), w_ls, rtol=0,
                               atol=1e-6 * np.abs(w_ls).max())
    assert model_loss(m2, (x[24:], y[24:]))[0] == pytest.approx(
        model_frontier(model, graph, "stages.1.0.conv1", (x[:24], y[:24]), (x[24:], y[24:]),
                       ks=[3], damp=1e-12).loss[3], rel=1e-9)


def test_mixed_stream_falls_back_and_says_so():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, n_ffn=12, block_size=6,
                          vocab_size=7)).eval()
    x, y = torch.randint(0, 7, (20, 6)), torch.randint(0, 7, (20, 6))
    graph = build_graph(model, x[:2])
    fr = model_frontier(model, graph, "stream:model", (x[:10], y[:10]), (x[10:], y[10:]),
                        "obs", ks=[4], fallback="wanda_sp")
    assert (fr.used, fr.compensated) == ("wanda_sp", False)
    plain = model_frontier(model, graph, "stream:model", (x[:10], y[:10]), (x[10:], y[10:]),
                           "wanda_sp", ks=[4])
    assert fr.frontier.order == plain.frontier.order and fr.loss == plain.loss
    ffn = model_frontier(model, graph, "blocks.0.mlp.fc", (x[:10], y[:10]), (x[10:], y[10:]),
                         ks=[6])
    assert (ffn.used, ffn.compensated) == ("obs", True)


def test_errors():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, n_ffn=12, block_size=6,
                          vocab_size=7)).eval()
    x, y = torch.randint(0, 7, (20, 6)), torch.randint(0, 7, (20, 6))
    graph = build_graph(model, x[:2])
    with pytest.raises(UsageError, match="no group 'nope'"):
        model_frontier(model, graph, "nope", (x, y), (x, y))
    with pytest.raises(UsageError, match="same data"):
        model_frontier(model, graph, "blocks.0.mlp.fc", (x, y), (x, y))
    with pytest.raises(UsageError, match="not in"):
        cut_groups(model, graph, {"blocks.0.mlp.fc": 40}, (x, y))
    with pytest.raises(UsageError, match="fallback"):
        model_frontier(model, graph, "blocks.0.mlp.fc", (x, y), (x[:5], y[:5]), fallback="obs")
    assert model.blocks[0].mlp.fc.out_features == 12  # nothing was cut


def test_cut_groups_is_all_or_nothing(monkeypatch):
    """Every width is checked before the first cut (a float >= 1 is no width), and a group
    that fails after others were cut puts the model and the graph back bit for bit."""
    from widthlab.frontier import models as fm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8),
                                torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    graph = build_graph(model, x[:2])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sizes = {g.name: g.size for g in graph.groups}

    def unchanged():
        after = model.state_dict()
        assert after.keys() == before.keys()
        assert all(torch.equal(after[k], before[k]) for k in before)
        assert {g.name: g.size for g in graph.groups} == sizes
        assert len(list(model.parameters())) == 6

    for widths, match in (({"0:out": 4, "2:out": 100}, "not in"),
                          ({"0:out": 1.0}, "fraction"), ({"0:out": 2.5}, "fraction"),
                          ({"0:out": True}, "int"), ({"0:out": 4, "0": 5}, "twice")):
        with pytest.raises(UsageError, match=match):
            cut_groups(model, graph, widths, (x, y))
        unchanged()
    real, calls = fm.group_frontier_of, []

    def fails_second(*a, **k):
        calls.append(a[2])
        if len(calls) == 2:
            raise RuntimeError("boom in the second group")
        return real(*a, **k)

    monkeypatch.setattr(fm, "group_frontier_of", fails_second)
    with pytest.raises(RuntimeError, match="boom"):
        cut_groups(model, graph, {"0:out": 3, "2:out": 5}, (x, y))
    assert calls == ["0:out", "2:out"]  # the first group was cut, then undone
    unchanged()
    monkeypatch.setattr(fm, "group_frontier_of", real)
    (fr,) = cut_groups(model, graph, {"0:out": 0.5}, (x, y))
    assert model[0].out_features == 4 and model[2].in_features == 4 and fr.group == "0:out"


# ------------------------------------------------------------------ (a) ResNet on MNIST
@pytest.fixture(scope="module")
def mnist_resnet():
    from tests.conftest import REAL_CACHE  # noqa: PLC0415

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WIDTHLAB_CACHE", REAL_CACHE)
        mp.delenv("WIDTHLAB_DATA", raising=False)
        from widthlab.data import load_splits  # noqa: PLC0415
        from widthlab.errors import WidthlabError  # noqa: PLC0415

        try:
            d = load_splits("mnist")
        except WidthlabError as e:  # not fetched here (./run test fetches it first)
            pytest.skip(f"MNIST not cached ({e}); run `widthlab data fetch mnist`")
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(stage_widths=(8, 16, 32), blocks=1))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x, y = d.train.x[:4000], d.train.y[:4000]
    for i in range(0, len(x), 32):
        loss = torch.nn.functional.cross_entropy(model(x[i:i + 32]), y[i:i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for m in model.modules():  # BatchNorm statistics of the final weights (cumulative)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model(x[:1000])
    model.eval()
    graph = build_graph(model, x[:2])
    return model, graph, (d.val.x[:300], d.val.y[:300]), (d.test.x[:1000], d.test.y[:1000])


@pytest.mark.realdata
def test_resnet_obs_keeps_more_accuracy_than_the_rankings(mnist_resnet):
    model, graph, calib, ev = mnist_resnet
    dense = model_loss(model, ev)[1]
    accs = {m: _cut_all(model, graph, "channels", m, calib, ev)[0][1]
            for m in ("obs", "magnitude", "taylor", "activation")}
    assert dense > 0.8  # a trained network
    assert accs["obs"] > max(accs[m] for m in ("magnitude", "taylor", "activation")), accs


# ------------------------------------------------------------------ (b) GPT on Shakespeare
@pytest.fixture(scope="module")
def char_gpt():
    from tests.conftest import REAL_CACHE  # noqa: PLC0415

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WIDTHLAB_CACHE", REAL_CACHE)
        from widthlab.data import load_text, verify_text  # noqa: PLC0415

        if any(r.status != "ok" for r in verify_text("shakespeare")):
            pytest.skip("shakespeare not cached; run `widthlab data fetch shakespeare`")
        c = load_text("shakespeare", auto_fetch=False)
    cfg = GPTConfig(n_layer=2, n_head=4, n_embd=64, n_ffn=256, block_size=32,
                    vocab_size=c.vocab_size)
    model, _ = train_gpt(cfg, c, 300, GPTTrain(batch_size=12, lr=3e-3, warmup_steps=20),
                         seed=0, eval_windows=4)
    gen = torch.Generator().manual_seed(1)
    calib = c.batch("train", 128, 32, generator=gen)
    ev = c.batch("val", 128, 32, generator=gen)
    return model.eval(), build_graph(model, calib[0][:2]), calib, ev


@pytest.mark.parametrize("kind", ["ffn", "heads"])
def test_gpt_obs_has_the_lowest_validation_loss(char_gpt, kind):
    model, graph, calib, ev = char_gpt
    dense = model_loss(model, ev)[0]
    losses = {m: _cut_all(model, graph, kind, m, calib, ev)[0][0] for m in GROUP_METHODS}
    best_other = min(v for m, v in losses.items() if m != "obs")
    assert losses["obs"] < best_other, losses
    if kind == "ffn":
        assert losses["obs"] - dense <= (best_other - dense) / 3, (dense, losses)
