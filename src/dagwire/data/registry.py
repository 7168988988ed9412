"""The registered datasets (name -> official source, file format, recipe) and user dataset names."""

from __future__ import annotations

from dataclasses import dataclass

_MNIST_CLASSES = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


@dataclass(frozen=True)
class _Spec:
    name: str
    source: str  # folder name of the official files: mnist, kmnist, fashion-mnist, cifar-10
    kind: str  # "idx" or "cifar"
    coloured: bool
    t8: bool
    classes: tuple[str, ...] | None  # None: read from the files (CIFAR's batches.meta)
    base: str | None = None  # for a T8 dataset, the dataset it is built from


def _build_registry() -> dict[str, _Spec]:
    base = [
        _Spec("cmnist", "mnist", "idx", True, False, _MNIST_CLASSES),
        _Spec("ckmnist", "kmnist", "idx", True, False, _KMNIST_CLASSES),
        _Spec("cfashionmnist", "fashion-mnist", "idx", True, False, _FASHION_CLASSES),
        _Spec("cifar10", "cifar-10", "cifar", False, False, None),
    ]
    reg = {s.name: s for s in base}
    for s in base:
        reg[s.name + "_t8"] = _Spec(s.name + "_t8", s.source, s.kind, s.coloured, True, s.classes, s.name)
    return reg


REGISTRY: dict[str, _Spec] = _build_registry()

USER_DATASET_KINDS = ("folder", "npz")  # folder:DIR (a subfolder of images per class), npz:FILE


def split_dataset_name(name: str) -> tuple[str | None, str]:
    """("folder" or "npz", the path) for a user dataset name, (None, the name in lower case) for a registered one."""
    prefix, sep, rest = name.strip().partition(":")
    if sep and prefix.lower() in USER_DATASET_KINDS and rest.strip():
        return prefix.lower(), rest.strip()
    return None, name.strip().lower()


def available_datasets() -> list[str]:
    """Names of the registered datasets (user datasets are `folder:DIR` and `npz:FILE`)."""
    return sorted(REGISTRY)
