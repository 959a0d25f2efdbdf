"""Make PyPI's torchvision importable beside a CPU-only torch.

PyPI's Linux wheel of ``torchvision`` (0.28.0 for ``torch==2.13.0``) is a CUDA build: its C
extension ``torchvision/_C.so`` links ``libtorch_cuda.so`` and ``libc10_cuda.so``, which the CPU
wheel of torch does not have, and the CPU build of torchvision lives on PyTorch's own wheel index,
not on PyPI. torchvision copes with a missing extension (``torchvision.extension._has_ops()`` is
then False and its detection operators raise a clear "Couldn't load custom C++ ops"), except for
one step: at import, ``torchvision._meta_registrations`` calls
``torch.library.register_fake("torchvision::nms")`` (and ``qnms``) unconditionally, which fails
with ``RuntimeError: operator torchvision::nms does not exist`` when the extension did not define
them. timm and transformers import torchvision, so they fail too.

:func:`ensure_torchvision_importable` defines those two operator schemas with ``torch.library``
(with kernels that raise a clear error) when, and only when, torchvision's extension cannot be
loaded. Every model of ``torchvision.models`` is plain torch and works; only the detection
operators (``torchvision.ops.nms``, ``roi_align``, ...) stay unavailable, with torchvision's own
error. Call it before the first ``import torchvision`` (or ``timm``, ``transformers``) in a
process; the test suite does it in ``tests/conftest.py``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

__all__ = ["ensure_torchvision_importable"]

# The schemas torchvision's C extension would define and that its Python code names at import.
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY = None  # the torch.library.Library holding the schemas; kept alive for the process


def _extension_loads(package_dir: str) -> bool:
    """Whether torchvision's compiled extension loads into this torch."""
    import torch

    paths = [os.path.join(package_dir, "_C" + suffix)
             for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    paths = [p for p in paths if os.path.exists(p)]
    if not paths:
        return False
    try:
        torch.ops.load_library(paths[0])
    except (OSError, RuntimeError):
        return False
    return True


def _raise_unavailable(*args, **kwargs):
    raise RuntimeError(
        "torchvision's C++ operators (nms, roi_align, ...) are not available: the installed "
        "torchvision wheel is a CUDA build whose extension does not load into this CPU-only "
        "torch. torchvision.models work; for detection operators install the torchvision build "
        "that matches your torch (PyTorch's CPU wheel index, or a CUDA torch)."
    )


def ensure_torchvision_importable() -> str:
    """Let ``import torchvision`` succeed beside a CPU-only torch.

    Returns
    -------
    str
        What was done: ``"absent"`` (torchvision is not installed), ``"imported"`` (it was
        imported already; nothing can be done any more), ``"native"`` (its extension loads, so
        nothing was needed) or ``"shimmed"`` (the ``torchvision::nms``/``qnms`` schemas were
        defined, with kernels that raise a clear error). Calling it again is harmless.
    """
    global _LIBRARY
    if _LIBRARY is not None:
        return "shimmed"
    if "torchvision" in sys.modules:
        return "imported"
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return "absent"
    if _extension_loads(list(spec.submodule_search_locations)[0]):
        return "native"
    import torch

    library = torch.library.Library("torchvision", "DEF")
    for name, schema in _SCHEMAS.items():
        library.define(schema)
        library.impl(name, _raise_unavailable, "CompositeExplicitAutograd")
    _LIBRARY = library
    return "shimmed"
