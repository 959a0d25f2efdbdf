"""Compare the stored numbers of two results stores run by run (issue 15's and 29's check).

    .venv/bin/python scripts/compare_stores.py OLD_STORE NEW_STORE [--studies variance,pca]
        [--datasets mnist] [--retired lenet:manifest] [--synonyms lambda=price]
        [--reports OLD.html NEW.html]

Runs are matched by their label, dataset and models' names (run ids differ when the code
changed: they hash it). A dataset name that embeds a matched run's id (``pca:conjecture``'s
``noise-<variance run id[-12:]>-m2``) is matched through that run. For every matched pair the
models (architecture, seed, variant, options), every metric row and every array are compared
exactly. Measured times (:func:`timed`: ``epoch_time``, ``step_time``, ``*_s``, ``*_ms``) are
compared apart: a run whose computed numbers are equal and whose times differ is ``same*``.

One line per label and dataset, then a summary:

- ``same`` / ``same*``: every computed number equal (``*``: measured times differ);
- ``DIFF``: a computed number differs (which metrics, how many values, the largest gap);
- ``MISSING``: only in the old store (a failure), ``RETIRED`` for a ``--retired`` label;
- ``NEW``: only in the new store (runs added since; not a failure).

``--synonyms old=new,...``: words renamed since (``lambda=price``), read as the new word in
model option names and in verdict texts of both sides.

With ``--reports`` the verdicts of two reports are compared section by section (sections only
in one report are counted, not compared). An old verdict the new report lacks (changed text or
outcome, or removed) counts as differing; a verdict only in the new report is listed as new
(added since; a changed one also appears as differing). A verdict that quotes a measured time
(``2.3s``) has its outcome and numbers computed from that time, so it is compared by its text
with every number masked, and a changed outcome is reported but not counted. Exits 1 when a
computed number differs, a run is missing or a verdict differs.
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
TIMED = ("epoch_time", "step_time")  # measured seconds per epoch / per step
SYNONYMS: dict[str, str] = {}  # words renamed since (old -> new), set by --synonyms


def _renamed(text: str) -> str:
    for old, new in SYNONYMS.items():
        text = re.sub(rf"\b{re.escape(old)}\b", new, text)
    return text


def timed(name: str) -> bool:
    """Whether a metric or array name is a measured time."""
    return name in TIMED or name.endswith(("_s", "_ms"))


def _runs(st: Store, studies: set[str] | None, renamed: dict | None = None
          ) -> dict[tuple[str, str, str], str]:
    """``(label, dataset, models) -> run id`` of the done runs; ``models`` names the run's
    models (runs of one label that train other models, such as a sweep's widths, are told
    apart by it); of the runs with one key the newest wins."""
    runs = st.runs()
    runs = runs.assign(study=runs.study.map(lambda s: (renamed or {}).get(s, s)))
    runs = runs[runs.status == "done"].sort_values("finished_at")
    out = {}
    for row in runs.itertuples():
        if studies is None or row.study.split(":", 1)[0].split("-", 1)[0] in studies:
            m = st.models(row.run_id)
            sig = ",".join(f"{n}{list(a)}" for n, a in zip(m["name"], m["arch"], strict=True))
            out[(row.study, row.dataset, sig)] = row.run_id
    return out


def match_embedded(ro: dict, rn: dict) -> dict:
    """``rn`` with dataset names that embed a matched new run's id (its last 12 characters)
    rewritten to embed the old run's, so runs named after another run match too."""
    tails = {rn[k][-12:]: ro[k][-12:] for k in ro.keys() & rn.keys()}
    out = {}
    for (label, ds, sig), rid in rn.items():
        for new_tail, old_tail in tails.items():
            if new_tail != old_tail and new_tail in ds:
                ds = ds.replace(new_tail, old_tail)
        out[(label, ds, sig)] = rid
    return out


def _name(key: tuple, keys: set) -> str:
    """``label / dataset``, with the models when other runs share the label and dataset."""
    shared = sum(k[:2] == key[:2] for k in keys) > 1
    return f"{key[0]} / {key[1]}" + (f" [{key[2][:60]}]" if shared else "")


def _models(st: Store, run_id: str) -> pd.DataFrame:
    """Architecture, seed, variant and options of every model; an option naming another run
    (``*_run``, or a value that is a run id of the store, such as a static model's ``of``)
    reads ``<run>``: run ids hash the code, the numbers do not."""
    m = st.models(run_id)
    ids = set(st.runs()["run_id"])

    def opts(o: dict) -> tuple:
        return tuple(sorted((SYNONYMS.get(k, k), "<run>" if k.endswith("_run") or (
            isinstance(v, str) and v in ids) else v) for k, v in o.items()))

    return pd.DataFrame({"arch": m["arch"].map(tuple), "seed": m["seed"],
                         "variant": m["variant"], "options": m["options"].map(opts)})


def _arrays(st: Store, run_id: str) -> dict:
    with st._read() as conn:  # every array row, decoded
        rows = conn.execute("SELECT model, epoch, name FROM arrays WHERE run_id = ?",
                            (run_id,)).fetchall()
    return {(m, e, n): st.array(run_id, m, n, epoch=e) for m, e, n in rows if not timed(n)}


def _metrics(st: Store, run_id: str, times: bool) -> pd.DataFrame:
    cols = ["model", "epoch", "split", "name"]
    m = st.metrics(run_id).sort_values(cols).reset_index(drop=True)
    return m[m.name.map(timed) == times].reset_index(drop=True)


def _metric_diffs(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    cols = ["model", "epoch", "split", "name"]
    if len(a) != len(b) or not a[cols].equals(b[cols]):
        return f"metric rows differ ({len(a)} vs {len(b)})"
    va, vb = a.value.to_numpy(float), b.value.to_numpy(float)
    bad = ~np.isclose(va, vb, rtol=0, atol=0, equal_nan=True)
    if not bad.any():
        return None
    worst = np.nanmax(np.abs(va[bad] - vb[bad]))
    names = sorted(set(a.split[bad] + "/" + a.name[bad]))
    return f"{int(bad.sum())} metric values differ (max {worst:.3g}; {names})"


def compare(old: Store, new: Store, run_old: str, run_new: str) -> list[str]:
    """What computed numbers differ between two runs (empty when all are equal; measured
    times are left out, see :func:`compare_times`)."""
    diffs = []
    if not _models(old, run_old).equals(_models(new, run_new)):
        diffs.append("models differ")
    gap = _metric_diffs(_metrics(old, run_old, False), _metrics(new, run_new, False))
    if gap:
        diffs.append(gap)
    xa, xb = _arrays(old, run_old), _arrays(new, run_new)
    if xa.keys() != xb.keys():
        diffs.append(f"array rows differ ({len(xa)} vs {len(xb)})")
    else:
        bad = [k for k in xa if not np.array_equal(xa[k], xb[k], equal_nan=True)]
        if bad:
            diffs.append(f"{len(bad)} arrays differ (e.g. {bad[0]})")
    return diffs


def compare_times(old: Store, new: Store, run_old: str, run_new: str) -> str | None:
    """How the measured times of two runs differ (None when they are equal)."""
    return _metric_diffs(_metrics(old, run_old, True), _metrics(new, run_new, True))


def verdicts(page: str) -> list[tuple[str, bool, str]]:
    """``(section, holds, text)`` of every verdict of a report page, in order; the section is
    the title of the ``<h2>`` above it."""
    found = []
    section = ""
    for m in re.finditer(r'<h2[^>]*>(.*?)</h2>|<li class="(holds|fails)"><b>[^<]*</b> (.*?)'
                         r'</li>', page, re.S):
        if m.group(1) is not None:
            section = html.unescape(re.sub("<[^>]+>", "", m.group(1))).strip()
        else:
            found.append((section, m.group(2) == "holds", html.unescape(m.group(3))))
    return found


MEASURED = re.compile(r"\d+(\.\d+)? ?(ms|s)\b")


def _verdict_key(holds: bool, text: str) -> tuple[str, bool | None, str]:
    """A timed verdict's outcome and numbers come from measured times: masked."""
    text = _renamed(text)
    if MEASURED.search(text):
        return "timed", None, re.sub(r"\d+(\.\d+)?", "#", text)
    return "exact", holds, text


def compare_reports(old: str, new: str) -> int:
    """Print the verdicts that differ in the sections both reports have; returns how many old
    verdicts the new report lacks (new verdicts and timed verdicts whose outcome changed are
    printed, not counted)."""
    a = verdicts(open(old, encoding="utf-8").read())
    b = verdicts(open(new, encoding="utf-8").read())
    common = {s for s, _, _ in a} & {s for s, _, _ in b}
    only = ({s for s, _, _ in a} - common, {s for s, _, _ in b} - common)
    ka = [(s, *_verdict_key(h, t), h) for s, h, t in a if s in common]
    kb = [(s, *_verdict_key(h, t), h) for s, h, t in b if s in common]
    strip = [k[:4] for k in ka], [k[:4] for k in kb]
    missing = [k for k in ka if k[:4] not in strip[1]]
    extra = [k for k in kb if k[:4] not in strip[0]]
    for tag, rows in (("VERDICT only in old", missing), ("NEW verdict", extra)):
        for s, _, _, text, holds in rows:
            print(f"{tag} [{s}] ({'holds' if holds else 'fails'}): {text}")
    flips = [(x, y) for x, y in zip([k for k in ka if k[1] == "timed"],
                                    [k for k in kb if k[1] == "timed"], strict=False)
             if x[:4] == y[:4] and x[4] != y[4]]
    for x, y in flips:
        print(f"TIMED verdict [{x[0]}] outcome {x[4]} -> {y[4]} (measured seconds): "
              f"{x[3][:100]}")
    print(f"verdict_sections_compared={len(common)} only_old={len(only[0])} "
          f"only_new={len(only[1])}")
    print(f"verdicts_compared_old={len(ka)} verdicts_compared_new={len(kb)} "
          f"timed={sum(k[1] == 'timed' for k in ka)} timed_outcome_changed={len(flips)}")
    print(f"verdicts_differing={len(missing)} verdicts_new={len(extra)}")
    return len(missing)


def compare_stores(old: Store, new: Store, ro: dict, rn: dict, retired: set[str]) -> dict:
    """Print one line per label and dataset; the counts of each outcome."""
    n = dict.fromkeys(["same", "same*", "DIFF", "MISSING", "RETIRED", "NEW"], 0)
    keys = set(ro) | set(rn)
    for key in sorted(keys):
        label = _name(key, keys)
        if key not in rn:
            tag = "RETIRED" if key[0] in retired else "MISSING"
            print(f"{tag} {label}: only in old")
        elif key not in ro:
            tag = "NEW"
            print(f"NEW {label}: only in new")
        else:
            diffs = compare(old, new, ro[key], rn[key])
            times = compare_times(old, new, ro[key], rn[key])
            tag = "DIFF" if diffs else "same*" if times else "same"
            note = "; ".join(diffs + ([f"times: {times}"] if times else []))
            print(f"{tag} {label}" + (f": {note}" if note else ""))
        n[tag] += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--studies", default=None, help="comma list of study names")
    ap.add_argument("--datasets", default=None, help="comma list of datasets")
    ap.add_argument("--retired", default="", help="comma list of labels gone by design")
    ap.add_argument("--synonyms", default="", help="old=new,...: words renamed since")
    ap.add_argument("--reports", nargs=2, default=None, metavar=("OLD_HTML", "NEW_HTML"))
    args = ap.parse_args(argv)
    studies = set(args.studies.split(",")) if args.studies else None
    SYNONYMS.clear()
    SYNONYMS.update(pair.split("=", 1) for pair in filter(None, args.synonyms.split(",")))
    old, new = Store(args.old), Store(args.new)
    ro, rn = _runs(old, studies, RENAMED), _runs(new, studies)
    if args.datasets:
        keep = set(args.datasets.split(","))
        ro = {k: v for k, v in ro.items() if k[1] in keep}
        rn = {k: v for k, v in rn.items() if k[1] in keep}
    rn = match_embedded(ro, rn)
    n = compare_stores(old, new, ro, rn, set(filter(None, args.retired.split(","))))
    bad = n["DIFF"] + n["MISSING"]
    if args.reports:
        bad += compare_reports(*args.reports)
    print(f"runs_old={len(ro)} runs_new={len(rn)} compared={n['same'] + n['same*'] + n['DIFF']}")
    print(f"identical_runs={n['same'] + n['same*']} (of which measured times differ: "
          f"{n['same*']})")
    print(f"differing_runs={n['DIFF']} missing_runs={n['MISSING']} retired={n['RETIRED']} "
          f"new_runs={n['NEW']}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
