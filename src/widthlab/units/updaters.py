"""Module attributes that state a size, brought up to date after units were removed.

One small updater per module type, looked up through the module's class (its MRO, so
subclasses such as ``NonDynamicallyQuantizableLinear`` are covered), and Hugging Face's
transposed ``Conv1D`` by name (transformers is optional). Each reads the new sizes off the
sliced tensors; ``before`` holds the sizes read before slicing, for attributes that need the
old ratio (a grouped conv's channels per group). ``counts`` holds the kept counts of
attributes the trace tied to units (a LayerNorm without affine parameters, GroupNorm's
groups).

Heads: the module that owns a group of heads (the deepest module holding all its slices)
has its head-count attributes (:data:`HEAD_ATTRS`) scaled by kept / old units, and so does
the model's Hugging Face config (:mod:`~widthlab.units.hf`).
"""

from __future__ import annotations

from torch import nn

HEAD_ATTRS = ("n_head", "n_heads", "num_heads", "num_attention_heads", "num_key_value_heads",
              "n_kv_heads", "n_kv_head", "num_kv_heads", "split_size", "all_head_size",
              "inner_dim", "attn_dim")


def _linear(m: nn.Linear, before: dict, counts: dict) -> None:
    m.out_features, m.in_features = int(m.weight.shape[0]), int(m.weight.shape[1])


def _conv(m: nn.modules.conv._ConvNd, before: dict, counts: dict) -> None:
    w = m.weight
    if m.transposed:
        m.in_channels, m.out_channels = int(w.shape[0]), int(w.shape[1])
        return
    per_group = before["out_channels"] // before["groups"]
    m.out_channels = int(w.shape[0])
    m.groups = m.out_channels // per_group if before["groups"] > 1 else 1
    m.in_channels = int(w.shape[1]) * m.groups


def _batch_norm(m: nn.modules.batchnorm._NormBase, before: dict, counts: dict) -> None:
    t = m.weight if m.weight is not None else m.running_mean
    if t is not None:
        m.num_features = int(t.shape[0])


def _layer_norm(m: nn.Module, before: dict, counts: dict) -> None:
    shape = tuple(m.normalized_shape)
    if getattr(m, "weight", None) is not None:
        m.normalized_shape = tuple(m.weight.shape)
    elif "normalized_shape" in counts:
        m.normalized_shape = shape[:-1] + (counts["normalized_shape"],)


def _group_norm(m: nn.GroupNorm, before: dict, counts: dict) -> None:
    if m.weight is not None:
        m.num_groups = m.num_groups * int(m.weight.shape[0]) // m.num_channels
        m.num_channels = int(m.weight.shape[0])
    else:
        m.num_groups = counts.get("num_groups", m.num_groups)
        m.num_channels = counts.get("num_channels", m.num_channels)


def _embedding(m: nn.Embedding, before: dict, counts: dict) -> None:
    m.num_embeddings, m.embedding_dim = int(m.weight.shape[0]), int(m.weight.shape[1])


def _mha(m: nn.MultiheadAttention, before: dict, counts: dict) -> None:
    if m.in_proj_weight is None:
        rows, m.embed_dim = m.q_proj_weight.shape
        m.kdim, m.vdim = int(m.k_proj_weight.shape[1]), int(m.v_proj_weight.shape[1])
    else:
        rows, m.embed_dim = int(m.in_proj_weight.shape[0]) // 3, int(m.in_proj_weight.shape[1])
        m.kdim = m.vdim = m.embed_dim
    m.num_heads = int(rows) // m.head_dim


def _hf_conv1d(m: nn.Module, before: dict, counts: dict) -> None:
    m.nf = int(m.weight.shape[1])
    if hasattr(m, "nx"):
        m.nx = int(m.weight.shape[0])


UPDATERS = {nn.Linear: _linear, nn.modules.conv._ConvNd: _conv,
            nn.modules.batchnorm._NormBase: _batch_norm, nn.LayerNorm: _layer_norm,
            nn.GroupNorm: _group_norm, nn.Embedding: _embedding,
            nn.MultiheadAttention: _mha}
if hasattr(nn, "RMSNorm"):
    UPDATERS[nn.RMSNorm] = _layer_norm


def snapshot(m: nn.Module) -> dict:
    """The attributes an updater needs from before the slicing."""
    return {k: getattr(m, k) for k in ("out_channels", "groups") if hasattr(m, k)}


def update(m: nn.Module, before: dict, counts: dict) -> None:
    """Bring ``m``'s size attributes up to date with its (sliced) tensors."""
    if type(m).__name__ == "Conv1D" and hasattr(m, "nf"):
        _hf_conv1d(m, before, counts)
        return
    for cls in type(m).__mro__:
        fn = UPDATERS.get(cls)
        if fn is not None:
            fn(m, before, counts)
            return


STREAM_ATTRS = ("hidden_dim", "hidden_size", "embed_dim", "d_model", "n_embd", "num_features",
                "embed_dims", "width")


def set_stream_width(model: nn.Module, modules: list[str], old: int, new: int) -> None:
    """Width attributes of the modules on a stream and their ancestors (torchvision's ViT
    reshapes by ``self.hidden_dim``) that state the old stream width get the new one."""
    names = {""}
    for name in modules:
        parts = name.split(".") if name else []
        names |= {".".join(parts[:i]) for i in range(len(parts) + 1)}
    for name in names:
        m = model.get_submodule(name)
        for attr in STREAM_ATTRS:
            if getattr(m, attr, None) == old and not isinstance(getattr(m, attr), bool):
                setattr(m, attr, new)


def scale_heads(m: nn.Module, old_units: int, new_units: int) -> list[str]:
    """Scale ``m``'s head-count attributes by ``new_units / old_units``; names changed."""
    changed = []
    for attr in HEAD_ATTRS:
        value = getattr(m, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value % old_units == 0:
            setattr(m, attr, value // old_units * new_units)
            changed.append(attr)
    return changed
