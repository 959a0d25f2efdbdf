"""count_macs against hand arithmetic and ResNetConfig.macs(); count_params; measure_latency
times the median forward, in eval/no_grad, and puts the thread count and the mode back."""

import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from widthlab.errors import UsageError
from widthlab.metrics.cost import count_macs, count_params, measure_latency
from widthlab.nn.resnet import ResNet, ResNetConfig


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)  # 9x9 -> 5x5
        self.c2 = nn.Conv2d(8, 4, 3, padding=1, groups=2)  # 5x5, 2 groups
        self.c3 = nn.Conv2d(4, 6, 1, dilation=2)  # 1x1
        self.up = nn.ConvTranspose2d(6, 2, 2, stride=2)  # 5x5 -> 10x10
        self.fc = nn.Linear(2 * 100, 7)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = self.c3(self.c2(x))
        return self.fc(self.up(x).flatten(1))


def test_conv_net_by_hand():
    # c1: 8 out x 25 positions x (3 in x 9); c2: 4 x 25 x (8/2 x 9); c3: 6 x 25 x 4;
    # up: every one of 6 x 25 inputs spread over 2 x 4 outputs; fc: 7 x 200
    hand = 8 * 25 * 27 + 4 * 25 * 36 + 6 * 25 * 4 + 6 * 25 * 2 * 4 + 7 * 200
    assert count_macs(ConvNet(), torch.randn(5, 3, 9, 9)) == hand == 12200


class Attention(nn.Module):
    def forward(self, x):  # x (N, T, E); heads of width 4 through both spellings
        q = x.view(x.shape[0], x.shape[1], 2, 4).transpose(1, 2)  # (N, 2, T, 4)
        s = q @ q.transpose(-1, -2)  # (N, 2, T, T): T*T*2 scores of 4 products
        a = torch.matmul(s.softmax(-1), q)  # (N, 2, T, 4): T*4*2 outputs of T products
        b = F.scaled_dot_product_attention(q, q, q)
        return torch.bmm(a.flatten(0, 1), b.flatten(0, 1).transpose(1, 2))  # (2N, T, T) of 4


def test_attention_matmuls_by_hand():
    t = 6
    per_pair = t * t * 2 * 4 + t * 4 * 2 * t  # q k^T and p v
    hand = 2 * per_pair + 2 * t * t * 4
    assert count_macs(Attention(), torch.randn(3, t, 8)) == hand


@pytest.mark.parametrize("cfg", [ResNetConfig(), ResNetConfig(
    stage_widths=(8, 16, 32), block_widths=((4, 8, 8), (16, 16, 8), (32, 16, 16)))])
def test_resnet_matches_config_arithmetic(cfg):
    torch.manual_seed(0)
    model = ResNet(cfg)
    assert count_macs(model, torch.randn(2, 1, 28, 28)) == cfg.macs()
    assert count_params(model) == cfg.param_count()
    assert model.training  # mode put back


def test_resnet_default_by_hand():
    # stem 9*1*16*784; stage 0: 6 convs 9*16*16*784; stage 1: 9*16*32 + 5*9*32*32 + 16*32
    # (shortcut) at 14*14; stage 2 likewise at 7*7; the Linear 64*10
    hand = (9 * 16 * 784 + 6 * 9 * 16 * 16 * 784
            + (9 * 16 * 32 + 5 * 9 * 32 * 32 + 16 * 32) * 196
            + (9 * 32 * 64 + 5 * 9 * 64 * 64 + 32 * 64) * 49 + 640)
    assert count_macs(ResNet(), torch.randn(1, 1, 28, 28)) == hand


def test_count_params_shared_once():
    lin = nn.Linear(4, 3)
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(3, 4))
    model[2].weight = nn.Parameter(lin.weight.detach().t().clone())
    tied = nn.Sequential(lin, lin)
    assert count_params(model) == 4 * 3 + 3 + 3 * 4 + 4
    assert count_params(tied) == 15


class Sleeper(nn.Module):
    def forward(self, x):
        assert not self.training and not torch.is_grad_enabled()
        time.sleep(0.01)
        return x


def test_latency_median_mode_and_threads_restored():
    before = torch.get_num_threads()
    model = Sleeper()
    sec = measure_latency(model, torch.zeros(2, 3), threads=1, repeats=5, warmup=1)
    assert 0.009 <= sec < 0.5
    assert model.training and torch.get_num_threads() == before


def test_latency_restores_threads_on_error_and_validates():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        measure_latency(Boom(), torch.zeros(1, 2), threads=1)
    assert torch.get_num_threads() == before
    with pytest.raises(UsageError, match="repeats"):
        measure_latency(Sleeper(), torch.zeros(1, 2), repeats=0)
    with pytest.raises(UsageError, match="batch tensor"):
        count_macs(Sleeper(), 3.0)


CALLS: list = []  # module-level: a deep copy of a Timed model logs here too


class Timed(nn.Module):
    """Sleeps ``seconds`` per forward and records the order of the calls and the input's
    and the weight's memory format."""

    def __init__(self, name, seconds):
        super().__init__()
        self.name, self.seconds = name, seconds
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        CALLS.append((self.name, x.is_contiguous(memory_format=torch.channels_last),
                         self.conv.weight.is_contiguous(memory_format=torch.channels_last)))
        time.sleep(self.seconds)
        return x


def test_latencies_time_the_models_in_turn_and_channels_last_on_copies():
    from widthlab.metrics.cost import measure_latencies

    log = CALLS
    log.clear()
    a, b = Timed("a", 0.004), Timed("b", 0.012)
    x = torch.randn(2, 3, 5, 5)
    ta, tb = measure_latencies([a, b], x, repeats=3, warmup=1)
    assert [n for n, _, _ in log] == ["a", "b"] * 4  # one forward of each per round
    assert 0.004 <= ta < tb and tb >= 0.012
    assert not any(cl_x or cl_w for _, cl_x, cl_w in log)
    log.clear()
    measure_latencies([a], x, repeats=1, warmup=0, channels_last=True)
    assert log == [("a", True, True)]  # a copy in channels_last, the input too
    assert not a.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert a.training and b.training
