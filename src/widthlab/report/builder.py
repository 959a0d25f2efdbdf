"""``widthlab report``: which runs go in, and which study draws each of them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from widthlab.errors import UsageError
from widthlab.store import Store
from widthlab.studies._common import study_of


def _study_sections():
    """Study label -> ``sections(store, run_ids, figures_dir)``, in the journal's order; every
    study module present registers itself (see :mod:`widthlab.studies`). A module's
    ``JOURNAL`` (the journal's own conclusion) is set on its sections that have none."""
    from widthlab.studies import available

    def wrap(mod):
        def sections(st, ids, out_dir):
            secs = mod.report_sections(st, ids, out_dir)
            for sec in secs:
                if not sec.journal:
                    sec.journal = getattr(mod, "JOURNAL", "")
            return secs
        return sections

    return {mod.STUDY: wrap(mod) for mod in available()}


def environment_section(store: Store, timings: list[dict] | None = None):
    """The machine and software the report was made with, and per-job wall times."""
    import platform

    import numpy as np
    import pandas as pd
    import torch

    from widthlab import __version__
    from widthlab.report.html import Section

    env = pd.DataFrame([
        ("widthlab", __version__), ("python", platform.python_version()),
        ("torch", torch.__version__), ("numpy", np.__version__),
        ("platform", platform.platform()), ("processor", platform.processor() or "-"),
        ("cpu count", str(os.cpu_count())), ("torch threads", str(torch.get_num_threads())),
        ("cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"),
        ("store", str(store.root)),
    ], columns=["item", "value"])
    tables = [("environment", env)]
    if timings:
        tables.append(("wall time per job (seconds; 0 = already stored, skipped)",
                       pd.DataFrame(timings)))
    return Section(title="Timings and environment",
                   intro="Each run's own config, code version and timings are in its "
                         "section's run details.", tables=tables)


def build_report(store: Store | str | os.PathLike, run_ids: list[str] | None,
                 out: str | os.PathLike, *, timings: list[dict] | None = None) -> Path:
    """Write the HTML report of ``run_ids`` (None: every finished run in the store) to ``out``.

    Runs are grouped by study, in the order given (or stored). Unfinished runs named
    explicitly are an error; unfinished runs found by "every run" are skipped with a note on
    stderr, as are runs of studies that have no report section yet.
    """
    from widthlab.report.html import write_report

    st = store if isinstance(store, Store) else Store(store)
    builders = _study_sections()
    if run_ids:
        chosen = [st.resolve(r) for r in run_ids]
        for r in chosen:
            info = st.get_run(r)
            if info["status"] != "done":
                raise UsageError(f"run {r} is {info['status']}, not done; finish it first "
                                 "(rerun its command) or leave it out")
            if study_of(info["study"]) not in builders:
                raise UsageError(f"run {r} belongs to study {info['study']!r}, which has no "
                                 f"report section; reportable studies: {', '.join(builders)}")
    else:
        runs = st.runs()
        chosen = []
        for row in runs.itertuples():
            if row.status != "done" or study_of(row.study) not in builders:
                print(f"widthlab: skipping run {row.run_id} ({row.study}, {row.status})",
                      file=sys.stderr)
                continue
            chosen.append(row.run_id)
        if not chosen:
            raise UsageError(f"no finished runs of a reportable study in {st.root}; run e.g. "
                             "`widthlab study variance --profile quick` first")
    out = Path(out)
    fig_dir = out.parent / f"{out.stem}-figures"
    by_study: dict[str, list[str]] = {}
    for r in chosen:
        by_study.setdefault(study_of(st.get_run(r)["study"]), []).append(r)
    sections = []
    for study, make in builders.items():  # journal order
        if study in by_study:
            sections += make(st, by_study[study], fig_dir)
    sections.append(environment_section(st, timings))
    return write_report(sections, out)
