"""One price name on the command line: --prices (and --start-prices), the old --lambdas
spellings still accepted for the same profile field."""

from __future__ import annotations

import click
import pytest

from widthlab.cli import app
from widthlab.errors import UsageError
from widthlab.studies import get_study
from widthlab.studies.growth.config import GrowthProfile
from widthlab.studies.sparsifier.config import SparsifierProfile


def _command(study: str) -> click.Command:
    group = app.commands["study"]  # commands are made on demand
    return group.get_command(click.Context(group), study)


def _parsed(study: str, args: list[str]) -> dict:
    cmd = _command(study)
    with cmd.make_context(study, [*args, "--store", "unused"]) as ctx:
        return {k: v for k, v in ctx.params.items() if v is not None}


@pytest.mark.parametrize("study", ["sparsifier", "growth"])
def test_prices_and_the_old_spelling_set_the_same_field(study):
    for spelling in ("--prices", "--lambdas"):
        assert _parsed(study, [spelling, "0,1e-3"])["prices"] == "0,1e-3"
    options = {o for p in _command(study).params for o in p.opts}
    assert {"--prices", "--lambdas"} <= options


def test_start_prices_spelling_and_profile_fields():
    assert _parsed("sparsifier", ["--start-prices", "1e-2"])["start_prices"] == "1e-2"
    assert _parsed("sparsifier", ["--start-lambdas", "1e-2"])["start_prices"] == "1e-2"
    fields = set(SparsifierProfile.__dataclass_fields__)
    assert {"prices", "start_prices"} <= fields and not {"lambdas", "start_lambdas"} & fields
    assert "prices" in GrowthProfile.__dataclass_fields__
    with pytest.raises(click.UsageError):
        _parsed("sparsifier", ["--price", "1"])  # no other spelling


def test_the_old_field_names_still_set_the_profile():
    sp = get_study("sparsifier")
    p = sp.profile("quick", lambdas=(0.0, 5e-3), start_lambdas=(2e-2,))
    assert p.prices == (0.0, 5e-3) and p.start_prices == (2e-2,)
    assert p == sp.profile("quick", prices=(0.0, 5e-3), start_prices=(2e-2,))
    assert get_study("growth").profile("quick", lambdas=(1e-2,)).prices == (1e-2,)
    with pytest.raises(UsageError, match="lamdas"):
        sp.profile("quick", lamdas=(1.0,))
