"""Random networks from the operations the units graph claims to follow, for the fuzzer.

A network is a list of block specs drawn by hypothesis: an image family (convs with groups and
depthwise, BatchNorm/GroupNorm, residual adds, concat, split, channel shuffle,
squeeze-excitation, a flatten into a Linear) and a token family (embedding with an optionally
tied head, LayerNorm, residual MLP, SwiGLU, fused-qkv attention with heads, linear width
changes, concat). Every size is small so one example runs in milliseconds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn

IMAGE_BLOCKS = ("conv", "dw", "res", "cat", "split", "se", "gn", "shuffle")
TOKEN_BLOCKS = ("mlp", "swiglu", "attn", "linear", "cat")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class ImageBlock(nn.Module):
    def __init__(self, kind: str, c: int, width: int, groups: int):
        super().__init__()
        self.kind, self.groups = kind, groups
        if kind == "conv":
            self.a = nn.Conv2d(c, width * groups, 3, padding=1, groups=groups)
            self.n = nn.BatchNorm2d(width * groups)
            self.out = width * groups
        elif kind == "dw":
            self.a = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
            self.n = nn.BatchNorm2d(c)
            self.out = c
        elif kind == "res":
            self.a, self.n = nn.Conv2d(c, width, 1), nn.BatchNorm2d(width)
            self.b = nn.Conv2d(width, c, 3, padding=1)
            self.out = c
        elif kind == "cat":
            self.a, self.b = nn.Conv2d(c, width, 1), nn.Conv2d(c, groups + 1, 3, padding=1)
            self.out = width + groups + 1
        elif kind == "split":
            self.cut, self.even = max(1, c // 2), c % 2 == 0
            self.a = nn.Conv2d(c - self.cut, width, 1)
            self.out = self.cut + width
        elif kind == "se":
            self.a, self.b = nn.Conv2d(c, width, 1), nn.Conv2d(width, c, 1)
            self.out = c
        elif kind == "gn":
            self.n = nn.GroupNorm(groups, c)
            self.out = c
        else:  # shuffle
            self.out = c

    def forward(self, x):
        k = self.kind
        if k in ("conv", "dw"):
            return F.relu(self.n(self.a(x)))
        if k == "res":
            return x + self.b(F.relu(self.n(self.a(x))))
        if k == "cat":
            return torch.cat([F.relu(self.a(x)), torch.tanh(self.b(x))], dim=1)
        if k == "split":  # chunk when even (sizes from the width), else a stated boundary
            if self.even:
                x1, x2 = x.chunk(2, dim=1)
            else:
                x1, x2 = x.split([self.cut, x.shape[1] - self.cut], dim=1)
            return torch.cat([x1, F.relu(self.a(x2))], dim=1)
        if k == "se":
            s = torch.sigmoid(self.b(F.relu(self.a(x.mean((2, 3), keepdim=True)))))
            return x * s
        if k == "gn":
            return self.n(x)
        b, c, h, w = x.shape
        return x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ImageNet(nn.Module):
    def __init__(self, stem: int, blocks: list[tuple[str, int, int]], flatten: bool):
        super().__init__()
        self.stem = nn.Conv2d(3, stem, 3, padding=1)
        layers, c = [], stem
        for kind, width, g in blocks:
            if kind == "conv":
                g = max(d for d in _divisors(c) if d <= g)
            if kind == "gn":
                g = max(d for d in _divisors(c) if d <= max(g, 1))
            if kind == "shuffle":  # c // g == 1 would look like an unsqueeze (see notes)
                g = max([d for d in _divisors(c) if d <= max(g, 1) and c // d >= 2] or [1])
            layers.append(ImageBlock(kind, c, width, g))
            c = layers[-1].out
        self.blocks = nn.Sequential(*layers)
        self.flatten = flatten
        self.head = nn.Linear(c * 4 if flatten else c, 3)

    def forward(self, x):  # (B, 3, 2, 2)
        h = self.blocks(F.relu(self.stem(x)))
        return self.head(torch.flatten(h, 1) if self.flatten else h.mean((2, 3)))


class TokenBlock(nn.Module):
    def __init__(self, kind: str, d: int, width: int, heads: int):
        super().__init__()
        self.kind, self.out = kind, d
        if kind in ("mlp", "swiglu", "attn"):
            self.ln = nn.LayerNorm(d)
        if kind == "mlp":
            self.a, self.b = nn.Linear(d, width), nn.Linear(width, d)
        elif kind == "swiglu":
            self.a, self.g = nn.Linear(d, width, bias=False), nn.Linear(d, width, bias=False)
            self.b = nn.Linear(width, d, bias=False)
        elif kind == "attn":
            self.n_head, self.head_dim = heads, max(width // heads, 1)
            self.a = nn.Linear(d, 3 * self.n_head * self.head_dim)
            self.b = nn.Linear(self.n_head * self.head_dim, d)
        elif kind == "linear":
            self.a = nn.Linear(d, width)
            self.out = width
        else:  # cat
            self.a, self.b = nn.Linear(d, width), nn.Linear(d, heads)
            self.out = width + heads

    def forward(self, x):  # (B, T, d)
        k = self.kind
        if k == "mlp":
            return x + self.b(F.gelu(self.a(self.ln(x))))
        if k == "swiglu":
            h = self.ln(x)
            return x + self.b(F.silu(self.g(h)) * self.a(h))
        if k == "attn":
            B, T, _ = x.shape
            inner = self.n_head * self.head_dim
            q, kk, v = self.a(self.ln(x)).split(inner, dim=2)
            q, kk, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
                        for t in (q, kk, v))
            y = F.scaled_dot_product_attention(q, kk, v, is_causal=True)  # (B, H, T, D)
            return x + self.b(y.transpose(1, 2).reshape(B, T, inner))
        if k == "linear":
            return F.relu(self.a(x))
        return torch.cat([self.a(x), torch.tanh(self.b(x))], dim=-1)


class TokenNet(nn.Module):
    def __init__(self, d: int, blocks: list[tuple[str, int, int]], tied: bool):
        super().__init__()
        self.embed = nn.Embedding(11, d)
        layers, c = [], d
        for kind, width, heads in blocks:
            layers.append(TokenBlock(kind, c, width, heads))
            c = layers[-1].out
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(c, 11, bias=False)
        if tied and c == d:
            self.head.weight = self.embed.weight

    def forward(self, idx):  # (B, T)
        return self.head(self.blocks(self.embed(idx)))


def _blocks(kinds: tuple[str, ...]):
    return st.lists(st.tuples(st.sampled_from(kinds), st.integers(2, 6), st.integers(1, 4)),
                    min_size=1, max_size=4)


@st.composite
def networks(draw):
    """(model, example input) of a random network."""
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    if draw(st.booleans()):
        model = ImageNet(draw(st.integers(2, 6)), draw(_blocks(IMAGE_BLOCKS)), draw(st.booleans()))
        x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    else:
        model = TokenNet(draw(st.integers(2, 6)), draw(_blocks(TOKEN_BLOCKS)), draw(st.booleans()))
        x = torch.randint(0, 11, (2, 3))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
                m.weight.normal_()
                m.bias.normal_()
    # float64: Adam divides by sqrt(v), which turns float32 rounding in near-zero gradients
    # into visible steps; in float64 a real mismatch still shows, rounding does not
    return model.double().eval(), x
