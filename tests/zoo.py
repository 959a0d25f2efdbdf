"""The model zoo of issue 28's reach list: one builder per model, random init, small inputs.

``build(name, seed)`` returns ``(model, example_inputs)``: the model in ``eval()`` mode, built
under ``torch.manual_seed(seed)`` with its init made informative (:func:`make_informative`: no
all-zero heads, no 1e-6 layer scales, BatchNorm statistics of random batches, so that every
unit shows in the output; ``informative=False`` keeps the library's init), and a tuple of
positional inputs drawn from a generator seeded with the same number; ``model(*example_inputs)``
runs. Images are 1x3x64x64 where the model allows it; the vision transformers take their
smallest sensible image size through their own ``image_size``/``img_size`` argument (32: 2x2
patches of 16). Language models take a 1x8 batch of token ids from small configs (vocabulary
96, width 32, 4 heads, 2 layers).

The builders of the small configs (``build_hf_*``, ``build_torch_transformer_encoder``,
``build_nanogpt``) take size overrides (``build_hf_llama(0, hidden_size=16,
num_attention_heads=2, num_key_value_heads=1)``): the "same class built at the smaller config"
that an exactness test copies kept slices into. A test or benchmark imports this module as
``from tests import zoo`` (the repository root on ``sys.path``, as pytest puts it).

``BUILDERS`` maps a model's name (``source.model``) to its builder. The whole list builds and
runs in about 6 s on one core (vgg11_bn, 133M parameters, is the slowest at 1-2 s).
torchvision, timm and transformers are dev dependencies; import this module after
``widthlab._compat.ensure_torchvision_importable()`` (``tests/conftest.py`` calls it, and so does
``benchmarks/bench_reach.py``), or PyPI's CUDA torchvision fails to import beside the CPU torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from widthlab._compat import ensure_torchvision_importable

ensure_torchvision_importable()

IMAGE = (1, 3, 64, 64)
VIT_IMAGE = 32  # the smallest image with more than one 16x16 patch per side
TOKENS = (1, 8)
VOCAB = 96


def _images(seed: int, size: tuple[int, ...] = IMAGE) -> tuple[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(size, generator=gen),)


def _tokens(seed: int, vocab: int = VOCAB) -> tuple[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, vocab, TOKENS, generator=gen),)


# --- torchvision --------------------------------------------------------------------------


def _torchvision(name: str, image: tuple[int, ...] = IMAGE, **kwargs) -> Callable:
    def build(seed: int = 0):
        import torchvision

        torch.manual_seed(seed)
        model = getattr(torchvision.models, name)(weights=None, **kwargs)
        return model.eval(), _images(seed, image)

    build.__name__ = f"build_torchvision_{name}"
    return build


# --- timm ---------------------------------------------------------------------------------


def _timm(name: str, image: tuple[int, ...] = IMAGE, **kwargs) -> Callable:
    def build(seed: int = 0):
        import timm

        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False, **kwargs)
        return model.eval(), _images(seed, image)

    build.__name__ = f"build_timm_{name}"
    return build


# --- Hugging Face transformers ------------------------------------------------------------

_HF_SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def build_hf_gpt2(seed: int = 0, **sizes):
    """GPT2LMHeadModel: fused qkv in a transposed ``Conv1D``, tied embeddings."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(**{**dict(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2,
                                  n_head=4, n_inner=64, bos_token_id=0, eos_token_id=0),
                           **sizes})
    return GPT2LMHeadModel(config).eval(), _tokens(seed)


def build_hf_llama(seed: int = 0, **sizes):
    """LlamaForCausalLM with grouped-query attention (2 kv heads for 4 query heads), SwiGLU."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**{**dict(vocab_size=VOCAB, max_position_embeddings=32,
                                   num_key_value_heads=2, **_HF_SIZES), **sizes})
    return LlamaForCausalLM(config).eval(), _tokens(seed)


def build_hf_bert(seed: int = 0, **sizes):
    """BertForSequenceClassification with 3 labels."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(**{**dict(vocab_size=VOCAB, max_position_embeddings=32, num_labels=3,
                                  **_HF_SIZES), **sizes})
    return BertForSequenceClassification(config).eval(), _tokens(seed)


def build_hf_vit(seed: int = 0, **sizes):
    """ViTForImageClassification on 32x32 images in 8x8 patches, 10 labels."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    config = ViTConfig(**{**dict(image_size=32, patch_size=8, num_channels=3, num_labels=10,
                                 **_HF_SIZES), **sizes})
    return ViTForImageClassification(config).eval(), _images(seed, (1, 3, 32, 32))


# --- torch.nn -----------------------------------------------------------------------------


def build_torch_transformer_encoder(seed: int = 0, **sizes):
    """``nn.TransformerEncoder`` (batch_first): 2 layers, width 32, 4 heads, FFN 64."""
    torch.manual_seed(seed)
    sizes = {**dict(d_model=32, nhead=4, dim_feedforward=64), **sizes}
    layer = nn.TransformerEncoderLayer(**sizes, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    gen = torch.Generator().manual_seed(seed)
    return model.eval(), (torch.randn(1, 8, sizes["d_model"], generator=gen),)


# --- a nanoGPT-style GPT, written the way a user writes one ------------------------------


@dataclass
class GPTConfig:
    block_size: int = 32
    vocab_size: int = VOCAB
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 32
    dropout: float = 0.0
    bias: bool = True


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # key, query, value projections for all heads, in one batch
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout

    def forward(self, x):
        B, T, C = x.size()  # batch, sequence length, embedding width (n_embd)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx):
        b, t = idx.size()
        assert t <= self.config.block_size, f"sequence of {t} > block size {self.config.block_size}"
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)  # (t,)
        tok_emb = self.transformer.wte(idx)  # (b, t, n_embd)
        pos_emb = self.transformer.wpe(pos)  # (t, n_embd)
        x = self.transformer.drop(tok_emb + pos_emb)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        return self.lm_head(x)  # (b, t, vocab_size)


def build_nanogpt(seed: int = 0, **sizes):
    """The GPT above at its default config (width 32, 4 heads, 2 layers, tied head)."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(**sizes)).eval(), _tokens(seed)


# --- the reach list -----------------------------------------------------------------------

BUILDERS: dict[str, Callable] = {
    "torchvision.resnet18": _torchvision("resnet18"),
    "torchvision.resnet50": _torchvision("resnet50"),
    "torchvision.mobilenet_v2": _torchvision("mobilenet_v2"),
    "torchvision.mobilenet_v3_small": _torchvision("mobilenet_v3_small"),
    "torchvision.efficientnet_b0": _torchvision("efficientnet_b0"),
    "torchvision.densenet121": _torchvision("densenet121"),
    "torchvision.regnet_y_400mf": _torchvision("regnet_y_400mf"),
    "torchvision.convnext_tiny": _torchvision("convnext_tiny"),
    "torchvision.vgg11_bn": _torchvision("vgg11_bn"),
    "torchvision.googlenet": _torchvision("googlenet", aux_logits=False, init_weights=False),
    "torchvision.squeezenet1_0": _torchvision("squeezenet1_0"),
    "torchvision.shufflenet_v2_x0_5": _torchvision("shufflenet_v2_x0_5"),
    "torchvision.swin_t": _torchvision("swin_t"),
    "torchvision.vit_b_16": _torchvision("vit_b_16", (1, 3, VIT_IMAGE, VIT_IMAGE),
                                         image_size=VIT_IMAGE),
    "timm.resnet18": _timm("resnet18"),
    "timm.convnext_atto": _timm("convnext_atto"),
    "timm.vit_tiny_patch16_224": _timm("vit_tiny_patch16_224", (1, 3, VIT_IMAGE, VIT_IMAGE),
                                       img_size=VIT_IMAGE),
    "hf.GPT2LMHeadModel": build_hf_gpt2,
    "hf.LlamaForCausalLM": build_hf_llama,
    "hf.BertForSequenceClassification": build_hf_bert,
    "hf.ViTForImageClassification": build_hf_vit,
    "torch.TransformerEncoder": build_torch_transformer_encoder,
    "nanogpt": build_nanogpt,
}

def build(name: str, seed: int = 0, informative: bool = True):
    """``(model, example_inputs)`` of the model called ``name`` (a key of ``BUILDERS``).

    With ``informative`` (the default) the model's init is made to let every unit show in the
    output (:func:`make_informative`); ``informative=False`` keeps the library's own init.
    """
    if name not in BUILDERS:
        raise KeyError(f"no model {name!r} in the zoo; choose one of {sorted(BUILDERS)}")
    model, inputs = BUILDERS[name](seed)
    if informative:
        make_informative(model, inputs, seed)
    return model, inputs


def make_informative(model: nn.Module, inputs: tuple, seed: int = 0) -> nn.Module:
    """Make a freshly initialised model's outputs depend visibly on every unit, in place.

    A library's init can hide units from the output, which would make an exactness test
    (shrunk model == masked model) pass whatever the shrinking did: torchvision's ViT zeroes its
    head (all outputs 0), ConvNeXt scales each block's branch by 1e-6 (layer scale), and in
    ``eval()`` mode BatchNorm's fresh running statistics (mean 0, variance 1) let the
    depthwise convs of MobileNet and EfficientNet shrink the signal to 1e-10. So: every
    parameter that is not a bias and whose entries are all within 1e-5 of zero is drawn again
    (weights N(0, 1/fan_in), vectors U(0.5, 1.5)), and every BatchNorm's running statistics
    are set to those of random batches shaped like ``inputs`` (cumulative average of 2 batches
    of 4 in train mode). The model is returned in ``eval()`` mode.
    """
    gen = torch.Generator().manual_seed(10_000 + seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or not p.is_floating_point() or p.abs().max() > 1e-5:
                continue
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if norms and all(x.is_floating_point() for x in inputs):
            momenta = [m.momentum for m in norms]
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative average
            model.train()
            for _ in range(2):
                model(*(torch.randn((4, *x.shape[1:]), generator=gen) for x in inputs))
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
    return model.eval()


def output_tensor(out) -> torch.Tensor:
    """The main output tensor of a forward: itself, or a Hugging Face output's ``logits``."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    raise TypeError(f"cannot find the output tensor in a {type(out).__name__}")
