"""Compare the stored numbers of two results stores run by run (issue 15's acceptance check).

    .venv/bin/python scripts/compare_stores.py OLD_STORE NEW_STORE [--studies variance,pca]
        [--reports OLD.html NEW.html]

Runs are matched by their label and dataset (run ids differ when the code changed: they hash
it); for every matched pair the models (architecture, seed, variant, options), every metric row
and every array are compared exactly (timings, measured latencies, hosts and dates left out).
Prints one line per label and dataset and a summary last; exits 1 when any number differs or a
run is missing.
With ``--reports`` the verdicts of two reports are compared too (holds or not, and their text;
verdicts quoting a measured latency are compared by outcome only).
"""

from __future__ import annotations

import argparse
import html
import re
import sys

import numpy as np
import pandas as pd

from widthlab.store import Store

# run labels renamed by the redesign (old -> new)
RENAMED = {"importance": "importance:scores", "ordering": "ordering:stability"}


def _runs(st: Store, studies: set[str] | None, renamed: dict | None = None
          ) -> dict[tuple[str, str], str]:
    runs = st.runs()
    runs = runs.assign(study=runs.study.map(lambda s: (renamed or {}).get(s, s)))
    runs = runs[runs.status == "done"].sort_values("finished_at")
    out = {}
    for row in runs.itertuples():
        if studies is None or row.study.split(":", 1)[0].split("-", 1)[0] in studies:
            out[(row.study, row.dataset)] = row.run_id  # the newest of each label wins
    return out


def _models(st: Store, run_id: str) -> pd.DataFrame:
    """Architecture, seed, variant and options of every model; options naming another run
    (``*_run``) are left out: run ids hash the code, the numbers do not."""
    m = st.models(run_id)

    def opts(o: dict) -> tuple:
        return tuple(sorted((k, v) for k, v in o.items() if not k.endswith("_run")))

    return pd.DataFrame({"arch": m["arch"].map(tuple), "seed": m["seed"],
                         "variant": m["variant"], "options": m["options"].map(opts)})


def _arrays(st: Store, run_id: str) -> dict:
    with st._read() as conn:  # every array row, decoded
        rows = conn.execute("SELECT model, epoch, name FROM arrays WHERE run_id = ?",
                            (run_id,)).fetchall()
    return {(m, e, n): st.array(run_id, m, n, epoch=e) for m, e, n in rows
            if not n.endswith(("_ms", "_s"))}  # measured times differ from run to run


def compare(old: Store, new: Store, run_old: str, run_new: str) -> list[str]:
    """What differs between two runs (empty when every stored number is equal)."""
    diffs = []
    if not _models(old, run_old).equals(_models(new, run_new)):
        diffs.append("models differ")
    cols = ["model", "epoch", "split", "name"]
    a = old.metrics(run_old).sort_values(cols).reset_index(drop=True)
    b = new.metrics(run_new).sort_values(cols).reset_index(drop=True)
    a = a[~a.name.str.endswith("_s")]
    b = b[~b.name.str.endswith("_s")]
    if len(a) != len(b) or not a[cols].equals(b[cols]):
        diffs.append(f"metric rows differ ({len(a)} vs {len(b)})")
    else:
        bad = ~np.isclose(a.value.to_numpy(float), b.value.to_numpy(float), rtol=0, atol=0,
                          equal_nan=True)
        if bad.any():
            worst = np.nanmax(np.abs(a.value.to_numpy(float) - b.value.to_numpy(float)))
            names = sorted(set(a.name[bad]))[:5]
            diffs.append(f"{int(bad.sum())} metric values differ (max {worst:.3g}; {names})")
    xa, xb = _arrays(old, run_old), _arrays(new, run_new)
    if xa.keys() != xb.keys():
        diffs.append(f"array rows differ ({len(xa)} vs {len(xb)})")
    else:
        bad = [k for k in xa if not np.array_equal(xa[k], xb[k], equal_nan=True)]
        if bad:
            diffs.append(f"{len(bad)} arrays differ (e.g. {bad[0]})")
    return diffs


def verdicts(page: str) -> list[tuple[bool, str]]:
    """``(holds, text)`` of every verdict of a report page, in order."""
    found = re.findall(r'<li class="(holds|fails)"><b>[^<]*</b> (.*?)</li>', page)
    return [(cls == "holds", html.unescape(text)) for cls, text in found]


def compare_reports(old: str, new: str) -> int:
    """Print verdicts that differ; returns how many."""
    a = verdicts(open(old, encoding="utf-8").read())
    b = verdicts(open(new, encoding="utf-8").read())
    timed = re.compile(r"\d+(\.\d+)? ?(ms|s)\b")
    key = [(h, timed.sub("<t>", t)) for h, t in a], [(h, timed.sub("<t>", t)) for h, t in b]
    missing = [v for v in key[0] if v not in key[1]]
    extra = [v for v in key[1] if v not in key[0]]
    for holds, text in missing:
        print(f"VERDICT only in old ({'holds' if holds else 'fails'}): {text}")
    for holds, text in extra:
        print(f"VERDICT only in new ({'holds' if holds else 'fails'}): {text}")
    print(f"verdicts_old={len(a)}")
    print(f"verdicts_new={len(b)}")
    print(f"verdicts_differing={len(missing) + len(extra)}")
    return len(missing) + len(extra)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--studies", default=None, help="comma list of study names")
    ap.add_argument("--datasets", default=None, help="comma list of datasets")
    ap.add_argument("--reports", nargs=2, default=None, metavar=("OLD_HTML", "NEW_HTML"))
    args = ap.parse_args(argv)
    studies = set(args.studies.split(",")) if args.studies else None
    old, new = Store(args.old), Store(args.new)
    ro, rn = _runs(old, studies, RENAMED), _runs(new, studies)
    if args.datasets:
        keep = set(args.datasets.split(","))
        ro = {k: v for k, v in ro.items() if k[1] in keep}
        rn = {k: v for k, v in rn.items() if k[1] in keep}
    same = bad = 0
    for key in sorted(set(ro) | set(rn)):
        label = f"{key[0]} / {key[1]}"
        if key not in ro or key not in rn:
            print(f"MISSING {label}: only in {'old' if key in ro else 'new'}")
            bad += 1
            continue
        diffs = compare(old, new, ro[key], rn[key])
        print(f"{'DIFF' if diffs else 'same'} {label}" + (f": {'; '.join(diffs)}" if diffs
                                                            else ""))
        same, bad = same + (not diffs), bad + bool(diffs)
    if args.reports:
        bad += compare_reports(*args.reports)
    print(f"identical_runs={same}")
    print(f"differing_or_missing_runs={bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
