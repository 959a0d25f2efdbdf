"""Hugging Face configs kept true after units were removed (transformers stays optional).

A sized model is saved with a config stating its new sizes so that ``from_pretrained``
rebuilds it. A config field is set only where the config can express the model: when every
layer agrees (after heads were cut in layer 0 only, ``num_attention_heads`` cannot say so and
is left as it was).
"""

from __future__ import annotations

from torch import nn

HIDDEN = ("hidden_size", "n_embd", "d_model", "embed_dim")
INTER = {"intermediate_size": ("up_proj", "intermediate.dense", "fc1", "mlp.c_fc"),
         "n_inner": ("mlp.c_fc",)}


def _width(m: nn.Module) -> int | None:
    if hasattr(m, "nf"):
        return int(m.nf)
    return getattr(m, "out_features", None)


def _hidden(model: nn.Module) -> int | None:
    """The stream width: the input embedding's width (a token table, or the conv or linear
    projection of patch embeddings)."""
    try:
        emb = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if isinstance(emb, nn.Embedding):
        return int(emb.embedding_dim)
    for m in emb.modules() if isinstance(emb, nn.Module) else ():
        if isinstance(m, nn.modules.conv._ConvNd):
            return int(m.out_channels)
        if isinstance(m, nn.Linear):
            return int(m.out_features)
    return None


def _uniform(values: list) -> int | None:
    values = [v for v in values if v is not None]
    return values[0] if values and len(set(values)) == 1 else None


def _heads(model: nn.Module, head_dim: int | None) -> tuple[int | None, int | None]:
    q, kv = [], []
    for name, m in model.named_modules():
        if name.endswith(("attn", "attention", "self_attn")) or name.endswith(".attention.self"):
            if hasattr(m, "q_proj") and head_dim:
                q.append(m.q_proj.out_features // head_dim)
                kv.append(m.k_proj.out_features // head_dim)
            elif isinstance(getattr(m, "num_heads", None), int):
                q.append(m.num_heads)
            elif isinstance(getattr(m, "num_attention_heads", None), int):
                q.append(m.num_attention_heads)
    return _uniform(q), _uniform(kv)


def sync_config(model: nn.Module) -> list[str]:
    """Set the size fields of ``model.config`` from its modules; returns the fields set."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return []
    changed = []

    def put(field: str, value) -> None:
        if value is not None and hasattr(config, field) and getattr(config, field) != value:
            setattr(config, field, value)
            changed.append(field)

    for field in HIDDEN:
        put(field, _hidden(model))
    for field, suffixes in INTER.items():
        widths = [_width(m) for n, m in model.named_modules() if n.endswith(suffixes)]
        if getattr(config, field, None) is not None:
            put(field, _uniform(widths))
    head_dim = getattr(config, "head_dim", None)
    q, kv = _heads(model, head_dim)
    put("num_attention_heads", q)
    put("n_head", q)
    put("num_key_value_heads", kv)
    return changed
