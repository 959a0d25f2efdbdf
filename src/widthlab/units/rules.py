"""The op table: ATen op name -> label rule (see :mod:`~widthlab.units.labels`).

An op is looked up by its overload packet name (``aten.add.Tensor`` -> ``"add"``). Ops without
labeled inputs need no rule; a labeled op missing here is refused by the recorder with the op
and module named. The rules live in :mod:`~widthlab.units.shape_rules` (elementwise, views,
slicing, concat) and :mod:`~widthlab.units.math_rules` (products, convolutions, attention,
norms, reductions, pooling).
"""

from __future__ import annotations

from widthlab.units import math_rules as m
from widthlab.units import shape_rules as s

UNARY = """abs alias clone contiguous cos detach dropout elu erf
exp expm1 feature_dropout fill gelu hardsigmoid hardswish hardtanh leaky_relu lift_fresh log
log1p log_sigmoid logical_not mish native_dropout neg nan_to_num reciprocal relu relu6 round
rsqrt selu sigmoid sign silu sin softplus sqrt square tanh threshold _to_copy to zero
empty_like zeros_like ones_like full_like rand_like randn_like _conj resolve_conj
resolve_neg isnan isinf isfinite gelu_ glu_dummy"""
BINARY = """add sub rsub mul div true_divide floor_divide maximum minimum where masked_fill
eq ne lt le gt ge logical_and logical_or logical_xor bitwise_and bitwise_or addcmul addcdiv
lerp atan2 fmod remainder copysign hypot xlogy copy fmax fmin pow clamp clamp_min clamp_max
bernoulli"""

RULES: dict = {}
for _name in UNARY.split():
    RULES[_name] = RULES[_name + "_"] = s.same
for _name in BINARY.split():
    RULES[_name] = RULES[_name + "_"] = s.pointwise
RULES.update({
    "view": s.reshape, "_unsafe_view": s.reshape, "reshape": s.reshape, "flatten": s.reshape,
    "unflatten": s.reshape, "squeeze": s.reshape, "unsqueeze": s.reshape, "squeeze_": s.reshape,
    "unsqueeze_": s.reshape, "view_as": s.reshape, "_reshape_alias": s.reshape,
    "expand": s.expand, "expand_as": s.expand,
    "permute": s.permute, "transpose": s.permute, "transpose_": s.permute, "t": s.permute,
    "numpy_T": s.permute, "swapaxes": s.permute,
    "select": s.select, "slice": s.slice_, "narrow": s.slice_,
    "split": s.split, "split_with_sizes": s.split, "unbind": s.split, "chunk": s.split,
    "cat": s.cat, "concat": s.cat, "stack": s.stack,
    "index_select": s.index_select, "index": s.gather_fix, "gather": s.gather_fix,
    "constant_pad_nd": s.pad, "roll": s.roll, "flip": s.flip, "repeat": s.repeat,
    "channel_shuffle": s.channel_shuffle, "native_channel_shuffle": s.channel_shuffle,
    "mm": m.mm, "addmm": m.mm, "bmm": m.mm, "baddbmm": m.mm, "mv": m.mm, "addmv": m.mm,
    "dot": m.mm, "convolution": m.convolution, "embedding": m.embedding,
    "_scaled_dot_product_flash_attention_for_cpu": m.attention,
    "_scaled_dot_product_flash_attention": m.attention,
    "_scaled_dot_product_efficient_attention": m.attention,
    "_scaled_dot_product_cudnn_attention": m.attention,
    "native_layer_norm": m.layer_norm, "_fused_rms_norm": m.rms_norm,
    "native_batch_norm": m.batch_norm, "_native_batch_norm_legit": m.batch_norm,
    "_native_batch_norm_legit_no_training": m.batch_norm,
    "_native_batch_norm_legit_functional": m.batch_norm, "cudnn_batch_norm": m.batch_norm,
    "native_group_norm": m.group_norm,
    "_softmax": m.softmax, "_log_softmax": m.softmax, "softmax": m.softmax,
    "_safe_softmax": m.softmax, "log_softmax": m.softmax,
    "max_pool1d": m.pool, "max_pool2d": m.pool, "max_pool2d_with_indices": m.pool,
    "max_pool3d_with_indices": m.pool, "avg_pool1d": m.pool, "avg_pool2d": m.pool,
    "_adaptive_avg_pool2d": m.pool, "adaptive_avg_pool1d": m.pool,
    "adaptive_max_pool2d": m.pool, "adaptive_max_pool1d": m.pool,
    "upsample_nearest2d": m.pool, "upsample_bilinear2d": m.pool,
    "_upsample_bilinear2d_aa": m.pool, "_upsample_nearest_exact2d": m.pool,
    "as_strided": s.reshape, "as_strided_": s.reshape,
    "new_zeros": m.unused, "new_ones": m.unused, "new_empty": m.unused, "new_full": m.unused,
    "cumsum": m.scan, "cumprod": m.scan, "cummax": m.scan, "cummin": m.scan,
    "logcumsumexp": m.scan,
    "argmax": m.unused, "argmin": m.unused, "_local_scalar_dense": m.unused,
    "sym_size": m.unused, "is_nonzero": m.unused, "equal": m.unused, "allclose": m.unused,
})
for _name in ("sum mean amax amin var std var_mean std_mean logsumexp norm max min prod any "
              "all linalg_vector_norm").split():
    RULES[_name] = m.reduction
