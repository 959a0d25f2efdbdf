"""``widthlab study <name>``: one command per study, built from its profile's fields.

Every study gets the same command: ``--dataset``, ``--profile``, ``--experiment``, one option
per profile field (its ``help`` metadata is the option's help), ``--device``, ``--store``,
``--csv DIR`` and ``--quiet``. The studies it requires run first (same profile). The command
prints the study's summary tables, writes them as CSV with ``--csv``, and prints the run ids.
"""

from __future__ import annotations

from pathlib import Path

import click

from widthlab.cli_options import (
    CONTEXT,
    data_option,
    device_option,
    profile_overrides,
    profile_params,
    quiet_option,
    store_option,
    target_option,
    user_data,
)
from widthlab.errors import UsageError
from widthlab.store import Store, write_frame
from widthlab.studies import available, get_study
from widthlab.studies.base import RunSet, Study, display_name
from widthlab.ui import engine_progress, print_frame


def run_with_requirements(study: Study, dataset: str, profile: str, *, store: Store,
                          device: str, progress, only=None, data=None, **overrides) -> RunSet:
    """Run ``study`` on ``dataset`` (or a user's ``data``) after the studies it requires
    (their same profile)."""
    upstream = {}
    for name in study.requires:
        upstream[name] = run_with_requirements(get_study(name), dataset, profile, store=store,
                                               device=device, progress=progress, data=data)
    return study.run(dataset, profile, store=store, device=device, progress=progress,
                     upstream=upstream, only=only, data=data, **overrides)


def _overrides(study: Study, profile: str, given: dict) -> dict:
    return profile_overrides(type(study.profile(profile)), given)


def _print_and_save(study: Study, store: Store, runs: dict[str, RunSet], csv: Path | None,
                    quiet: bool) -> None:
    tables = study.tables(store, {d: dict(r.runs) for d, r in runs.items()})
    shown = getattr(study, "print_columns", ())  # a terminal-wide subset; CSV gets all
    for name, frame in study.summary(tables).items():
        if not quiet:
            cols = [c for c in shown if c in frame] or list(frame.columns)
            print_frame(frame, cols, title=name)
        if csv is not None:
            click.echo(str(write_frame(frame, Path(csv) / f"{name}.csv")))


def make_command(study: Study) -> click.Command:
    """The click command of ``study``."""
    steps = [s.name for s in study.experiments(study.profile(next(iter(study.profiles))),
                                               "mnist")]

    def callback(dataset, profile, experiment, device, store, csv, quiet, data_path, target,
                 **given):
        overrides = _overrides(study, profile, given)
        own = study.own_data(data_path) if data_path is not None else None
        data = own if own is not None else user_data(data_path, target)  # checked first
        names = (data.name,) if data is not None else \
            (study.datasets if dataset == "both" else (dataset,))
        only = None if experiment == "all" else [e.strip() for e in experiment.split(",")]
        bad = sorted(set(only or ()) - set(steps))
        if bad:
            raise UsageError(f"unknown experiment(s) {', '.join(bad)} of the {study.name} "
                             f"study; choose all or from {', '.join(steps)}")
        st = Store.open(store)
        results = {}
        with engine_progress(quiet) as progress:
            for name in names:
                results[name] = run_with_requirements(study, name, profile, store=st,
                                                      device=device, progress=progress,
                                                      only=only, data=data, **overrides)
        _print_and_save(study, st, results, csv, quiet)
        for name, runs in results.items():
            for exp, run_id in runs.runs.items():
                if not quiet:
                    click.echo(f"# {display_name(name)} {exp}", err=True)
                click.echo(run_id)

    params = [
        click.Option(["--dataset"], type=click.Choice([*study.datasets, "both"]),
                     default="both", show_default=True,
                     help="Dataset(s) to run the study on (both: all of them)."),
        click.Option(["--profile"], type=click.Choice(list(study.profiles)), default="quick",
                     show_default=True, help="Settings to start from (options override them)."),
        click.Option(["--experiment"], default="all", show_default=True,
                     help=f"all, or a comma list of: {', '.join(steps)}."),
    ]
    params += profile_params(type(study.profile(next(iter(study.profiles)))),
                             suffix=" (overrides the profile)")
    cmd = click.Command(study.command or study.name, callback=callback, params=params,
                        help=(study.__doc__ or study.title).strip(), context_settings=CONTEXT)
    for deco in (target_option, data_option, device_option, store_option, quiet_option,
                 click.option("--csv", type=click.Path(path_type=Path, file_okay=False),
                              default=None, help="Write the summary tables as CSV here.")):
        cmd = deco(cmd)
    return cmd


class StudyGroup(click.Group):
    """``widthlab study <name>``: commands built on demand from the registry."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [s.command or s.name for s in available()]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        for study in available():
            if name == (study.command or study.name):
                return make_command(study)
        return None
