"""What every study module shares: CLI options, dataset lists, picking runs for the report.

A study module (``widthlab/studies/<name>.py``) exposes

- ``STUDY``: its run label. Engine runs are labelled ``STUDY`` or ``"STUDY:experiment"`` (a
  study with several experiments); the report hands a study every finished run whose label
  starts with it. Helper runs that are not reported (e.g. pre-training) use another label.
- ``run(dataset, profile="quick", *, store=..., progress=True, **overrides)``: train what is
  missing through the engine (resuming or reusing stored runs); returns run id(s).
- ``report_sections(store, run_ids, out_dir) -> list[Section]``: figures, tables and verdicts
  drawn from the store only.
- ``cli``: the ``widthlab study <name>`` click command.
- optionally ``REQUIRES``: studies whose runs this one reads (``widthlab reproduce`` runs them
  first, and the Ray executor ships their runs to the worker), and ``JOURNAL``: the journal's
  own conclusion, shown beside the verdicts.
"""

from __future__ import annotations

from pathlib import Path

import click

from widthlab.errors import UsageError

DATASETS = ("mnist", "fashion-mnist")
DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def datasets_for(choice: str) -> list[str]:
    """``"both"`` -> both datasets, else ``[choice]``."""
    return list(DATASETS) if choice == "both" else [choice]


def display_name(dataset: str) -> str:
    return DATASET_NAMES.get(dataset, dataset)


def parse_seeds(text: str) -> list[int]:
    """``"3"`` means seeds 0, 1, 2; ``"4,7"`` is an explicit list."""
    try:
        if "," in text:
            seeds = [int(t) for t in text.split(",") if t.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise UsageError(f"cannot read seeds {text!r}: give a count (3) or a list (0,4,7)") \
            from None
    if not seeds or any(s < 0 for s in seeds):
        raise UsageError(f"seeds must be a positive count or a list of seeds >= 0, got {text!r}")
    return seeds


def sweep_specs(widths, seeds, study: str) -> list:
    """One one-hidden-layer :class:`~widthlab.nn.ModelSpec` per width x seed (``seeds``: a
    count, 3 = seeds 0, 1, 2, or a list); ``study`` names the caller in the error."""
    from widthlab.nn import ModelSpec

    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not widths or not seed_list:
        raise UsageError(f"the {study} study needs at least one width and one seed")
    return [ModelSpec((int(w),), seed=int(s)) for w in widths for s in seed_list]


def pick_profile(profiles: dict, profile, cls: type):
    """``profile`` itself when it is a ``cls`` instance, else ``profiles[profile]``."""
    if isinstance(profile, cls):
        return profile
    if profile in profiles:
        return profiles[profile]
    raise UsageError(f"unknown profile {profile!r}; choose {' or '.join(profiles)}")


def run_label(study: str, experiment: str | None = None) -> str:
    """The engine's ``TrainConfig.study`` for a study (and one of its experiments)."""
    return study if experiment is None else f"{study}:{experiment}"


def study_of(label: str) -> str:
    """The study a run label belongs to (``"flexible:frontier"`` -> ``"flexible"``)."""
    return label.split(":", 1)[0]


def experiment_of(label: str) -> str | None:
    return label.split(":", 1)[1] if ":" in label else None


def newest_runs(store, run_ids: list[str]) -> dict[tuple[str, str | None], str]:
    """Among ``run_ids``, the most recently finished run per ``(dataset, experiment)``.

    A store may hold several runs of one experiment (quick and full profiles, older code);
    a report section shows the newest of each.
    """
    best: dict[tuple[str, str | None], tuple[str, str]] = {}
    for r in run_ids:
        info = store.get_run(r)
        key = (info["dataset"], experiment_of(info["study"]))
        stamp = info.get("finished_at") or info.get("updated_at") or ""
        if key not in best or stamp >= best[key][0]:
            best[key] = (stamp, r)
    return {k: v[1] for k, v in best.items()}


# ------------------------------------------------------------------------------ CLI options
store_option = click.option(
    "--store",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("widthlab-runs"),
    show_default="./widthlab-runs",
    envvar="WIDTHLAB_STORE",
    help="Results store folder (holds widthlab.sqlite) [env: WIDTHLAB_STORE].",
)
dataset_option = click.option(
    "--dataset", type=click.Choice(["mnist", "fashion-mnist", "both"]), default="both",
    show_default=True, help="Dataset(s) to run the study on.")
device_option = click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto", show_default=True)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars or tables.")


def profile_option(help_text: str):
    """``--profile quick|full`` with the study's own description of both."""
    return click.option("--profile", type=click.Choice(["quick", "full"]), default="quick",
                        show_default=True, help=help_text)
