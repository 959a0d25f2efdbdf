"""What the sparsifier and growth studies share about gate kinds: which kind a stored run
trained with, and how a claim comparing two datasets names it."""

from __future__ import annotations

from widthlab.store import Store

KIND_NAMES = {"hard_concrete": "hard-concrete (stochastic L0) gates"}


def gate_kind(store: Store | str, run_id: str) -> str:
    """The gate kind a stored run trained with (``"l1"`` unless a modifier names another,
    e.g. ``"hard_concrete"``)."""
    for m in Store.open(store).require_run(run_id)["config"].get("modifiers") or []:
        if isinstance(m, dict) and m.get("gate_kind"):
            return str(m["gate_kind"])
    return "l1"


def kind_terms(claim: str, kinds: tuple[str, str]) -> tuple[str, str, str | None]:
    """The claim and the text's opening for the gate kinds of the MNIST and FashionMNIST runs
    (the L1 wording as before), or why the two cannot be compared."""
    if kinds[0] != kinds[1]:
        return claim, "", (f"MNIST was trained with {kinds[0]} gates and FashionMNIST with "
                           f"{kinds[1]} gates: not comparable; run both with the same "
                           "--gate-kind")
    if kinds[0] == "l1":
        return claim, "", None
    name = KIND_NAMES.get(kinds[0], kinds[0])
    return f"{claim} ({name})", f"With {name}: ", None
