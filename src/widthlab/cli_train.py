"""``widthlab train``: a width sweep, its options generated from :class:`TrainProfile`'s fields.

The command is built like a ``widthlab study`` command: one option per profile field (its help
from the field's metadata, its value read by the same parser, ``--widths`` included), plus
``--dataset``/``--data``/``--target``, ``--device``, ``--store`` and ``--quiet``. Values are
checked by the profile before anything is trained; misuse exits 2.
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
from widthlab.engine import train
from widthlab.errors import WidthlabError
from widthlab.store import Store
from widthlab.studies.train_profile import TrainProfile
from widthlab.ui import engine_progress, print_frame


def _train(dataset: str | None, data_path: Path | None, target: str | None, device: str,
           store: Path, quiet: bool, **given) -> None:
    """Train one-hidden-layer MLPs of every width x seed together, on one minibatch stream.

    The same command resumes an interrupted run from its last checkpoint and does nothing for
    a finished one (a run's id is a hash of everything that changes its numbers). Prints the
    run id and each model's final test accuracy.
    """
    profile = TrainProfile().replace(**profile_overrides(TrainProfile, given))
    data = user_data(data_path, target)  # checked before anything is trained
    cfg = profile.config(data.name if data is not None else dataset or "mnist", device)
    with engine_progress(quiet) as progress:
        run_id = train(profile.specs(), cfg, store, progress=progress, data=data)
    st = Store(store)
    models = st.models(run_id)
    m = st.metrics(run_id)
    last = m[(m.split == "test") & (m.name == "acc") & (m.epoch == profile.epochs)]
    acc = dict(zip(last.model, last.value, strict=True))
    models["test acc"] = [f"{acc[i]:.4f}" if i in acc else None for i in models["model"]]
    if not quiet:
        print_frame(models, ["model", "width", "seed", "status", "test acc", "failure"],
                    title=run_id)
    click.echo(run_id)
    if len(models) and (models["status"] == "failed").all():
        raise WidthlabError(f"every model of run {run_id} diverged ({models['failure'].iloc[0]}"
                            "); lower the learning rate with --lr")


def make_train_command() -> click.Command:
    """The ``widthlab train`` command: TrainProfile's fields as options."""
    params = [click.Option(["--dataset"], type=click.Choice(["mnist", "fashion-mnist"]),
                           default=None, show_default="mnist",
                           help="Dataset to train on (or --data FILE).")]
    params += profile_params(TrainProfile, show_defaults=True)
    cmd = click.Command("train", callback=_train, params=params, help=_train.__doc__,
                        context_settings=CONTEXT)
    for deco in (data_option, target_option, device_option, store_option, quiet_option):
        cmd = deco(cmd)
    return cmd


train_cmd = make_train_command()
