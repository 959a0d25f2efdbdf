"""WidthCallback with the real Lightning Trainer on a slice of MNIST (CPU, deterministic)."""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("lightning")
import lightning.pytorch as pl  # noqa: E402

from widthlab.integrations.lightning import WidthCallback, load_sized  # noqa: E402
from widthlab.nn.surgery import gate_widths, model_gates  # noqa: E402

pytestmark = [pytest.mark.realdata, pytest.mark.usefixtures("one_thread")]
NAMES = ["conv1", "conv2"]


class Net(pl.LightningModule):
    def __init__(self, masks: dict | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 12, 3)
        self.fc = nn.Linear(12 * 5 * 5, 10)
        self.losses: list[float] = []
        self.example_input_array = torch.zeros(2, 1, 28, 28)  # gate_layers traces on it

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=0.05)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.7)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Mask(pl.Callback):
    """The reference: the same run, where each gated unit the callback would remove is
    instead masked (its gate output multiplied by 0) from that step on."""

    def __init__(self, every: int) -> None:
        self.every, self.masks = every, {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step % self.every:
            return
        for gate in model_gates(module):
            dead = gate.gate.detach() <= 0  # relu(g) == 0, computed here, not by the rule
            if gate.key in self.masks:
                dead |= self.masks[gate.key] == 0
            else:
                gate.register_forward_hook(lambda m, a, out: out * self.masks[m.key].view(
                    [-1 if d == (m.dim % out.ndim) else 1 for d in range(out.ndim)]))
            self.masks[gate.key] = (~dead).float()


def loader(n=384, batch=64):
    from widthlab.data import load_splits

    d = load_splits("mnist")
    ds = torch.utils.data.TensorDataset(d.train.x[:n].view(-1, 1, 28, 28), d.train.y[:n])
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=False)


def fit(tmp_path, callbacks, epochs=2, ckpt=None, module=None, **kw):
    module = module or Net()
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, accelerator="cpu",
                         logger=pl.loggers.CSVLogger(tmp_path, name="logs"),
                         enable_progress_bar=False, enable_model_summary=False,
                         deterministic=True, log_every_n_steps=1, **kw)
    trainer.fit(module, loader(), ckpt_path=ckpt)
    return trainer, module


def test_shrinks_during_fit_like_masking_and_logs_widths(real_cache, tmp_path):
    cb = WidthCallback(NAMES, price=0.05, init=0.3, every_n_steps=3, every_n_epochs=None)
    trainer, shrunk = fit(tmp_path / "a", [cb], enable_checkpointing=False)
    ref = WidthCallback(NAMES, price=0.05, init=0.3, every_n_epochs=None)  # never shrinks
    _, masked = fit(tmp_path / "b", [ref, Mask(3)], enable_checkpointing=False)
    widths = gate_widths(shrunk)
    assert len(cb.sizer.history) == 4  # steps 3, 6, 9, 12 of 12
    assert sum(sum(h["removed"].values()) for h in cb.sizer.history) > 0
    assert widths["conv1"] < 8 and shrunk.conv1.out_channels == widths["conv1"]
    assert shrunk.conv2.in_channels == widths["conv1"]
    assert shrunk.fc.in_features == 25 * widths["conv2"]
    assert torch.allclose(torch.tensor(shrunk.losses), torch.tensor(masked.losses),
                          atol=1e-5, rtol=0)
    with open(next((tmp_path / "a").rglob("metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    last = [r for r in rows if r.get("width/conv1")][-1]
    assert float(last["width/conv1"]) == widths["conv1"]
    assert float(last["width/conv2"]) == widths["conv2"]
    assert any(r.get("width/penalty") for r in rows)


def test_resume_after_shrink_equals_uninterrupted(real_cache, tmp_path):
    def cb():
        return WidthCallback(NAMES, price=0.05, init=0.12, every_n_epochs=1)

    ckpts = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_top_k=-1,
                                         filename="{epoch}")
    _, full = fit(tmp_path / "a", [cb(), ckpts])
    first = tmp_path / "ck" / "epoch=0.ckpt"
    saved = torch.load(first, weights_only=False)
    state = saved["state_dict"]  # shrunk before it was saved
    assert state["conv1.weight"].shape[0] + state["conv2.weight"].shape[0] < 8 + 12
    _, resumed = fit(tmp_path / "b", [cb()], ckpt=str(first), enable_checkpointing=False)
    assert resumed.losses == full.losses[len(full.losses) - len(resumed.losses):]
    a, b = full.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the final sized model loads back into a freshly built module for inference
    sized = load_sized(Net(), tmp_path / "ck" / "epoch=1.ckpt", cb()).eval()
    x = loader().dataset.tensors[0][:16]
    full.eval()
    assert torch.equal(sized(x), full(x))
