"""One run spec: everything that changes a run's numbers, hashed into its id, and nothing else.

Every result widthlab stores is described by a :class:`RunSpec` and identified by its
:meth:`~RunSpec.key`: an engine run of a bank of MLPs (:class:`~widthlab.engine.trainer.Engine`),
a run of any ``nn.Module`` (:class:`~widthlab.engine.module_run.ModuleRun`), a language model
trained on token windows (:class:`~widthlab.engine.token_run.TokenRun`), a stored analysis
and a ``widthlab reproduce`` job. The spec has two halves:

- **hashed** (what changes the numbers): the kind of run, the data's identity, the models
  (architecture, seed, initial parameters), the training settings (optimizer, learning rate,
  schedule, epochs, batch size, data seed...), the modifiers and hooks (gates and their prices,
  epoch hooks, the loss) and the hash of the code that runs
  (:mod:`widthlab.engine.identity`);
- **not hashed** (what only says where or how it runs, or what it is called): the label
  (``study:experiment``), the id's prefix and dataset name, and ``placement`` (device,
  evaluation batch size, what a finished checkpoint keeps, a data file's path). Progress,
  worker counts and the store's location never enter a spec at all.

A config dataclass (:class:`~widthlab.engine.config.TrainConfig`,
:class:`~widthlab.engine.modules.ModuleConfig`,
:class:`~widthlab.engine.token_run.TokenConfig`) says which of its fields are hashed in each
field's metadata (``hashed=False``, or ``"shrinks"``: only when a modifier removes units);
:func:`split_config` sorts its values into the two halves. Studies, ``widthlab train`` and the
Python API all reach a run through one of those configs, so they all build the same spec; the
run lifecycle (:func:`~widthlab.engine.lifecycle.run_trainable`) refuses a trainable whose
``run_id`` is not its spec's.

Example::

    from widthlab.engine.spec import RunSpec

    spec = RunSpec("bank", label="mine:sweep", dataset="mnist", data="mnist:55000:5000:10000",
                   train={"epochs": 3, "lr": 1e-3}, placement={"device": "cpu"})
    spec.run_id()                                   # "mine.sweep-mnist-<12 hex digits>"
    spec.key() == spec.replace(placement={"device": "cuda"}, label="x:y").key()   # True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

KINDS = ("bank", "module", "token", "analysis", "job")
NOT_HASHED = {"hashed": False}


@dataclass(frozen=True)
class RunSpec:
    """What a stored result is (see the module docstring).

    Parameters
    ----------
    kind : {"bank", "module", "token", "analysis", "job"}
    label : str
        The stored run label (``"study:experiment"``); not hashed.
    dataset : str
        The dataset's name (in the id); its identity is ``data``.
    data : str
        The data's identity: a content hash, or its name and split sizes.
    models : sequence
        One description per model (a ``ModelSpec.to_dict()``, a module's class, structure and
        initial parameters).
    train : mapping
        The hashed training settings.
    modifiers : sequence
        Modifiers, hooks and the loss: what they are and their settings (gates, prices).
    code : str
        The code hash (:func:`~widthlab.engine.identity.closure_hash`).
    placement : mapping
        Settings that change no number (device, evaluation batch...); not hashed.
    prefix : str
        The id's prefix; default: the label with ``:`` as ``.``. Not hashed.
    """

    kind: str
    label: str = field(default="", metadata=NOT_HASHED)
    dataset: str = field(default="", metadata=NOT_HASHED)
    data: str = ""
    models: Sequence[Any] = ()
    train: Mapping[str, Any] = field(default_factory=dict)
    modifiers: Sequence[Any] = ()
    code: str = ""
    placement: Mapping[str, Any] = field(default_factory=dict, metadata=NOT_HASHED)
    prefix: str = field(default="", metadata=NOT_HASHED)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"RunSpec kind must be one of {', '.join(KINDS)}, got "
                             f"{self.kind!r}")

    @classmethod
    def hashed_fields(cls) -> list[str]:
        """The fields that enter :meth:`key`."""
        return [f.name for f in dataclasses.fields(cls) if f.metadata.get("hashed", True)]

    def hashed(self) -> dict:
        """The hashed half, as plain data."""
        return {name: getattr(self, name) for name in self.hashed_fields()}

    def key(self) -> str:
        """SHA-256 (64 hex digits) of the hashed half (JSON, sorted keys)."""
        blob = json.dumps(self.hashed(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def run_id(self) -> str:
        """``<prefix>-<dataset>-<first 12 digits of the key>``."""
        prefix = self.prefix or self.label.replace(":", ".")
        return f"{prefix}-{self.dataset}-{self.key()[:12]}"

    def replace(self, **changes: Any) -> RunSpec:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


def split_config(cfg: object, shrinks: bool = False) -> tuple[dict, dict]:
    """A config dataclass' values as ``(hashed, not hashed)`` by its fields' metadata:
    ``hashed=False`` never counts, ``hashed="shrinks"`` counts only when ``shrinks``."""
    hashed, placed = {}, {}
    values = dataclasses.asdict(cfg)
    for f in dataclasses.fields(cfg):
        flag = f.metadata.get("hashed", True)
        counts = flag is True or (shrinks and flag == "shrinks")
        (hashed if counts else placed)[f.name] = values[f.name]
    return hashed, placed


#: options of a ``widthlab reproduce`` job that say where it runs or reads its data from
JOB_PLACEMENT = ("device", "data_file")


def job_spec(study: str, dataset: str, profile: str, options: Sequence[tuple[str, Any]],
             code: str) -> RunSpec:
    """The spec of a reproduction job (:class:`widthlab.executors.Job`): the study, profile,
    the options that change numbers and the code are hashed, with the data's identity (a user
    file's ``data_id``, else the dataset's name); the options in :data:`JOB_PLACEMENT` are its
    placement."""
    opts = dict(options)
    placement = {k: opts.pop(k) for k in JOB_PLACEMENT if k in opts}
    return RunSpec("job", label=study, prefix=f"{study}-{dataset}-{profile}", dataset=dataset,
                   data=str(opts.pop("data_id", dataset)),
                   train={"profile": profile, "options": sorted(opts.items())}, code=code,
                   placement=placement)


def data_identity(data: Any) -> str:
    """The ``data`` of a spec for a ``DatasetSplits``: its content hash, else its name and
    split sizes."""
    return getattr(data, "content_id", None) or \
        f"{data.name}:{len(data.train)}:{len(data.val)}:{len(data.test)}"


def without_defaults(values: dict, defaults: dict) -> dict:
    """``values`` less the keys whose value equals ``defaults[key]``: settings added after runs
    were stored enter an identity only when set, so the older runs keep their ids."""
    return {k: v for k, v in values.items() if k not in defaults or v != defaults[k]}


def hashed_names(cls: type, shrinks: bool = False) -> list[str]:
    """The names of the fields of config dataclass ``cls`` that :func:`split_config` hashes."""
    return [f.name for f in dataclasses.fields(cls)
            if f.metadata.get("hashed", True) is True
            or (shrinks and f.metadata.get("hashed") == "shrinks")]


__all__ = ["JOB_PLACEMENT", "KINDS", "NOT_HASHED", "RunSpec", "data_identity", "hashed_names",
           "job_spec", "split_config", "without_defaults"]
