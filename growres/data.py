"""Image-classification data for training multi-level ResNets.

Datasets are read through Hugging Face ``datasets`` (a Hub id, a ``save_to_disk`` folder or parquet files) and
decoded once into uint8 tensors. Augmentation (Appendix A of Chang et al., ICLR 2018: zero padding, random crop,
random horizontal flip, standardisation) then runs batched on whatever device holds the batch, because per-sample
PIL transforms would starve the model on a small CPU.

Fashion-MNIST is the offline default: it is read from the IDX files of the Debian package ``dataset-fashion-mnist``
(or the Hub copy), converted once into a cached Hugging Face dataset of 3x32x32 images, so CIFAR-shaped models apply.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F

from .errors import GrowresError

__all__ = ["DATASETS", "FASHION_MNIST_CLASSES", "DatasetSpec", "ImageData", "dataset_fingerprint", "load_image_data"]


@dataclass(frozen=True)
class DatasetSpec:
    """A known dataset: where it lives on the Hub, how its columns map, and the paper's training settings."""

    name: str  # short name used on the command line and in fingerprints, e.g. "cifar10"
    hub_id: str  # Hub repository read when no dataset_id overrides it
    image_column: str  # preferred image column; guessing takes over when a mirror names it differently
    label_column: str  # preferred label column; CIFAR-100 needs "fine_label", guessing could pick "coarse_label"
    train_split: str = "train"
    test_split: str = "test"  # preferred eval split; validation/valid/val are tried after it
    pad: int = 4  # zero padding before the random crop (Appendix A: 4 for 32x32 images, 12 for STL-10's 96x96)
    batch_size: int = 100  # mini-batch size of the paper (100 for CIFAR, 32 for STL-10)
    # Per-channel statistics in [0, 1] pixel units; None means "compute them from the loaded training images".
    # Published values keep a subsampled run (max_train_samples) normalised like the full dataset.
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "cifar10",
            "uoft-cs/cifar10",
            "img",
            "label",
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
        ),
        DatasetSpec(
            "cifar100",
            "uoft-cs/cifar100",
            "img",
            "fine_label",
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
        ),
        DatasetSpec("stl10", "tanganke/stl10", "image", "label", pad=12, batch_size=32),
        # Read from the Debian package's IDX files first (see load_image_data); the Hub copy is the fallback.
        DatasetSpec("fashion-mnist", "zalando-datasets/fashion_mnist", "image", "label"),
    )
}

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
# Bump the suffix whenever the conversion changes, so old caches are not read as new ones.
_FASHION_MNIST_CACHE = "fashion-mnist-v1"
_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_MNIST_HINT = (
    "install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "
    "or connect to the Hugging Face Hub"
)
_EVAL_SPLITS = ("test", "validation", "valid", "val")
_LABEL_NAMES = ("label", "labels", "fine_label")
_DECODE_CHUNK = 2048  # images decoded per step: bounds the temporary numpy batch, large enough to amortise overhead


@dataclass(eq=False)  # tensor fields make field-wise == ambiguous; compare with dataset_fingerprint instead
class ImageData:
    """Decoded train/test images and labels, with the standardisation and augmentation training applies."""

    name: str  # dataset name, or the dataset_id it was read from
    # uint8 N x 3 x H x W: 4x smaller than float32, so a whole dataset fits in memory and moves cheaply per batch.
    train_images: torch.Tensor = field(repr=False)
    train_labels: torch.Tensor = field(repr=False)  # int64 N, what cross-entropy expects
    test_images: torch.Tensor = field(repr=False)
    test_labels: torch.Tensor = field(repr=False)
    num_classes: int
    class_names: list[str]
    mean: tuple[float, ...]  # per channel, [0, 1] pixel units
    std: tuple[float, ...]
    pad: int  # zero padding of the random crop; a plain field so callers can change it for their own data
    # Side of the square images the model sees; None: the stored size. Resizing happens per batch on the device
    # (after the crop, at the stored size, so Appendix A's padding keeps its meaning), never to the stored set,
    # which would grow with the square of the size.
    image_size: int | None = None
    _stats_on: dict = field(default_factory=dict, init=False, repr=False)  # device -> (mean, std) tensors

    @property
    def input_size(self) -> tuple[int, int, int]:
        """C x H x W of the images :meth:`normalize` and :meth:`augment` return."""
        channels, height, width = self.train_images.shape[1:]
        return (channels, height, width) if self.image_size is None else (channels, self.image_size, self.image_size)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Standardise uint8 images (N x C x H x W or C x H x W) to float32 with the per-channel mean and std,
        resized to ``image_size`` when it is set."""
        _check_uint8(images, "normalize")
        mean, std = self._channel_stats(images.device)
        floats = images.to(torch.float32).div_(255.0).sub_(mean).div_(std)
        if self.image_size is None or tuple(images.shape[-2:]) == (self.image_size, self.image_size):
            return floats
        # bilinear weights sum to one, so resizing after standardising equals standardising the resized pixels
        batch = floats if floats.dim() == 4 else floats[None]
        resized = F.interpolate(batch, size=(self.image_size, self.image_size), mode="bilinear",
                                align_corners=False, antialias=True)
        return resized if floats.dim() == 4 else resized[0]

    def _channel_stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """mean and std as C x 1 x 1 tensors on ``device``, made once: a copy to a GPU every batch would wait
        for the GPU's queue (a blocking copy from host memory)."""
        if device not in self._stats_on:
            self._stats_on[device] = tuple(
                torch.tensor(values, dtype=torch.float32).view(-1, 1, 1).to(device) for values in (self.mean, self.std)
            )
        return self._stats_on[device]

    def augment(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Zero-pad, random-crop back to H x W, randomly flip horizontally, then normalise: a batch in one go.

        Runs on the device that holds ``images``. Random numbers come from torch's global RNG unless a
        ``generator`` is given, so restoring RNG states (as accelerate's ``load_state`` does) replays the same
        augmentation after a resume. Padding is black in pixel space, as torchvision's ``RandomCrop`` pads.
        """
        _check_uint8(images, "augment")
        if images.dim() != 4:
            raise GrowresError(
                f"augment expects a batch N x C x H x W, got shape {tuple(images.shape)}; add a batch dimension."
            )
        n, channels, height, width = images.shape
        pad = self.pad
        # Draw on the generator's device (a CPU generator cannot feed CUDA sampling), then move the few numbers.
        rng_device = generator.device if generator is not None else images.device
        top = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=rng_device).to(images.device)
        left = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=rng_device).to(images.device)
        flip = torch.rand(n, generator=generator, device=rng_device).lt(0.5).to(images.device)
        padded = F.pad(images, (pad, pad, pad, pad))
        rows = top[:, None] + torch.arange(height, device=images.device)
        cols = torch.arange(width, device=images.device).expand(n, width)
        # Crop and flip are one gather: a flipped sample reads its crop's columns right to left.
        cols = left[:, None] + torch.where(flip[:, None], cols.flip(1), cols)
        batch = torch.arange(n, device=images.device)[:, None, None, None]
        chan = torch.arange(channels, device=images.device)[None, :, None, None]
        cropped = padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]
        return self.normalize(cropped)


def dataset_fingerprint(data: ImageData) -> dict:
    """What identifies a dataset for resuming: JSON-safe, so it compares equal after a round trip through a file."""
    return {
        "name": data.name,
        "num_classes": data.num_classes,
        "image_size": list(data.train_images.shape[1:]),  # [C, H, W]
        "num_train": data.train_images.shape[0],
        "num_test": data.test_images.shape[0],
    }


def load_image_data(
    dataset: str | None = "fashion-mnist",
    *,
    dataset_id: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    cache_dir: str | Path | None = None,
    image_size: int | None = None,
) -> ImageData:
    """Load a train/test image-classification dataset as uint8 tensors.

    Args:
        dataset: a name in ``DATASETS``. It supplies the padding, statistics and preferred columns; without
            ``dataset_id`` it also says where the data lives (Fashion-MNIST: the Debian package, then the Hub).
        dataset_id: read the data from here instead: a Hub id ``ORG/NAME``, a folder written by
            ``save_to_disk``, a folder of parquet (or other) data files with train/test splits, or a parquet file.
        image_column, label_column: column names; when omitted the spec's names are used if present, otherwise
            the first ``Image`` column and a ``ClassLabel`` (preferring label/labels/fine_label) are guessed.
        max_train_samples, max_eval_samples: keep only the first N examples, selected before decoding.
        cache_dir: where growres keeps converted data (default ``$GROWRES_CACHE`` or ``~/.cache/growres``);
            when given, ``datasets`` also caches Hub and parquet reads under it.
        image_size: the side N of the N x N images the model sees; images of another size are resized per batch
            by :meth:`ImageData.normalize` (None: as stored).
    """
    spec = _find_spec(dataset)
    if spec is None and dataset_id is None:
        raise GrowresError(
            "No dataset given: pass a dataset name (one of " + _known() + ") or dataset_id=ORG/NAME or a local path."
        )
    for arg, value in (("max_train_samples", max_train_samples), ("max_eval_samples", max_eval_samples),
                       ("image_size", image_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise GrowresError(f"{arg} must be a positive integer or None, got {value!r}.")

    cache_root = _cache_root(cache_dir)
    hf_cache = str(Path(cache_dir) / "hf-datasets") if cache_dir is not None else None
    if dataset_id is None and spec.name == "fashion-mnist":
        splits = datasets.load_from_disk(str(_fashion_mnist_cache(cache_root, hf_cache)))
    else:
        splits = _load_splits(dataset_id or spec.hub_id, hf_cache)

    train, test = _pick_splits(splits, spec)
    image_col = _pick_image_column(train, image_column, spec)
    label_col = _pick_label_column(train, label_column, spec)
    _require_columns(test, (image_col, label_col), "eval")
    if max_train_samples is not None:
        train = train.select(range(min(max_train_samples, len(train))))
    if max_eval_samples is not None:
        test = test.select(range(min(max_eval_samples, len(test))))

    train_images = _decode_images(train, image_col, "train")
    test_images = _decode_images(test, image_col, "eval")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise GrowresError(
            f"Train images are {_size(train_images)} but eval images are {_size(test_images)}; "
            "resize them to one size before loading."
        )
    train_labels = _labels(train, label_col, "train")
    test_labels = _labels(test, label_col, "eval")

    label_feature = train.features[label_col]
    if isinstance(label_feature, datasets.ClassLabel):
        class_names = list(label_feature.names)
    else:
        class_names = [str(i) for i in range(int(max(train_labels.max(), test_labels.max())) + 1)]

    if spec is not None and spec.mean is not None:
        mean, std = spec.mean, spec.std
    else:
        mean, std = _channel_stats(train_images)
    return ImageData(
        name=dataset_id or spec.name,
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        num_classes=len(class_names),
        class_names=class_names,
        mean=tuple(mean),
        std=tuple(std),
        pad=spec.pad if spec is not None else DatasetSpec.pad,
        image_size=image_size,
    )


def _known() -> str:
    return ", ".join(sorted(DATASETS))


def _find_spec(dataset: str | None) -> DatasetSpec | None:
    if dataset is None:
        return None
    if dataset not in DATASETS:
        raise GrowresError(
            f"Unknown dataset {dataset!r}: use one of {_known()}, or pass dataset_id= with a Hub id or a local path."
        )
    return DATASETS[dataset]


def _cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("GROWRES_CACHE") or Path.home() / ".cache" / "growres")


def _load_splits(source: str, hf_cache: str | None) -> datasets.DatasetDict | datasets.Dataset:
    """Read a Hub id or a local path into whatever ``datasets`` returns for it; failures become GrowresError."""
    path = Path(source)
    try:
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            return datasets.load_from_disk(str(path))
        if path.is_file():
            if path.suffix != ".parquet":
                raise GrowresError(
                    f"Local file {source!r} is not parquet; pass a parquet file or a folder with train/test data."
                )
            return datasets.load_dataset("parquet", data_files=str(path), cache_dir=hf_cache)
        # A folder of data files (split names inferred from file names), or a Hub id.
        return datasets.load_dataset(source, cache_dir=hf_cache)
    # ConnectionError (OfflineModeIsEnabled too), DatasetNotFoundError and HfHubHTTPError are all OSErrors.
    except OSError as err:
        where = "the local folder" if path.exists() else "the Hugging Face Hub"
        raise GrowresError(
            f"Could not load dataset {source!r} from {where} ({type(err).__name__}: {err}); check the id or path, "
            "your network connection, and that HF_HUB_OFFLINE / HF_DATASETS_OFFLINE are not set."
        ) from err


def _pick_splits(
    splits: datasets.DatasetDict | datasets.Dataset, spec: DatasetSpec | None
) -> tuple[datasets.Dataset, datasets.Dataset]:
    needed = "a 'train' split and a 'test' split (or 'validation'/'valid'/'val')"
    if not isinstance(splits, Mapping):
        raise GrowresError(
            f"The dataset has no splits; save a DatasetDict with {needed}, e.g. with Dataset.train_test_split."
        )
    train_name = spec.train_split if spec is not None else "train"
    eval_names = (spec.test_split, *_EVAL_SPLITS) if spec is not None else _EVAL_SPLITS
    eval_name = next((name for name in eval_names if name in splits), None)
    if train_name not in splits or eval_name is None:
        raise GrowresError(
            f"The dataset has splits {sorted(splits)} but training needs {needed}; a single parquet file holds one "
            "split, so put train and test files in one folder and pass the folder."
        )
    return splits[train_name], splits[eval_name]


def _require_columns(split: datasets.Dataset, columns: tuple[str, ...], split_name: str) -> None:
    for column in columns:
        if column not in split.column_names:
            raise GrowresError(
                f"The {split_name} split has no column {column!r}; available columns: {split.column_names}. "
                "Pass image_column= / label_column= with one of them."
            )


def _pick_image_column(split: datasets.Dataset, explicit: str | None, spec: DatasetSpec | None) -> str:
    features = split.features
    if explicit is not None:
        _require_columns(split, (explicit,), "train")
        if not isinstance(features[explicit], datasets.Image):
            raise GrowresError(
                f"Column {explicit!r} holds {features[explicit]!r}, not images; pass image_column= naming an Image "
                f"column (columns: {split.column_names})."
            )
        return explicit
    if spec is not None and isinstance(features.get(spec.image_column), datasets.Image):
        return spec.image_column
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name
    raise GrowresError(f"No Image column found among {split.column_names}; pass image_column= naming the image column.")


def _pick_label_column(split: datasets.Dataset, explicit: str | None, spec: DatasetSpec | None) -> str:
    features = split.features
    if explicit is not None:
        _require_columns(split, (explicit,), "train")
        return explicit
    if spec is not None and spec.label_column in features:
        return spec.label_column
    class_labels = [name for name, feature in features.items() if isinstance(feature, datasets.ClassLabel)]
    # A preferred name first: CIFAR-100 has two ClassLabels and its 100-class "fine_label" is the task.
    for name in (*[n for n in class_labels if n in _LABEL_NAMES], *class_labels, *_LABEL_NAMES):
        if name in features:
            return name
    raise GrowresError(
        f"No label column found among {split.column_names}; pass label_column= naming the integer class column."
    )


def _size(images: torch.Tensor) -> str:
    return "x".join(str(s) for s in images.shape[2:])


def _decode_images(split: datasets.Dataset, column: str, split_name: str) -> torch.Tensor:
    """Decode an Image column into one uint8 N x 3 x H x W tensor, converting every mode to RGB."""
    # Image(mode="RGB") makes PIL convert grey, palette, RGBA and CMYK alike; a no-op for RGB images.
    view = split.select_columns([column]).cast_column(column, datasets.Image(mode="RGB")).with_format("numpy")
    out: torch.Tensor | None = None
    for start in range(0, len(view), _DECODE_CHUNK):
        chunk = view[start : start + _DECODE_CHUNK][column]
        # The numpy formatter stacks equal-shaped images and returns an object array when sizes differ.
        if chunk.dtype == object or (out is not None and chunk.shape[1:3] != tuple(out.shape[2:])):
            sizes = sorted({f"{img.shape[1]}x{img.shape[0]}" for img in chunk})
            first = [] if out is None else [f"{out.shape[3]}x{out.shape[2]}"]
            raise GrowresError(
                f"The {split_name} images differ in size ({', '.join(first + sizes)}, width x height); "
                "resize them to one size before loading."
            )
        if out is None:
            out = torch.empty((len(view), 3, *chunk.shape[1:3]), dtype=torch.uint8)
        out[start : start + len(chunk)] = torch.from_numpy(chunk).permute(0, 3, 1, 2)
    if out is None:
        raise GrowresError(f"The {split_name} split is empty; training needs images in both train and eval splits.")
    return out


def _labels(split: datasets.Dataset, column: str, split_name: str) -> torch.Tensor:
    feature = split.features[column]
    integer = isinstance(feature, datasets.ClassLabel) or (
        isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))
    )
    if not integer:
        raise GrowresError(
            f"Label column {column!r} holds {feature!r}, not integer classes; pass label_column= naming an integer "
            "or ClassLabel column (dataset.class_encode_column turns strings into one)."
        )
    # [:] formats the whole column as one batch; split[column] would be a lazy column formatted row by row.
    labels = torch.from_numpy(split.select_columns([column]).with_format("numpy")[:][column].astype(np.int64))
    if labels.min() < 0:
        raise GrowresError(
            f"The {split_name} split has negative labels in {column!r} (unlabelled examples?); drop those rows first."
        )
    return labels


def _channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units, from exact pixel-value histograms (no float copy of the set)."""
    counts = torch.zeros(images.shape[1], 256, dtype=torch.int64)
    for chunk in images.split(_DECODE_CHUNK):
        for c in range(images.shape[1]):
            counts[c] += torch.bincount(chunk[:, c].reshape(-1), minlength=256)
    values = torch.arange(256, dtype=torch.float64) / 255.0
    total = counts.sum(dim=1).double()
    mean = (counts * values).sum(dim=1) / total
    var = ((counts * values**2).sum(dim=1) / total - mean**2).clamp_min(0.0)
    # A constant channel carries no information; std 1 keeps normalize finite instead of dividing by zero.
    std = torch.where(var > 0, var.sqrt(), torch.ones_like(var))
    return mean.tolist(), std.tolist()


def _check_uint8(images: torch.Tensor, what: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise GrowresError(f"{what} expects uint8 image tensors as held in ImageData, got {got}; pass the raw images.")


# Fashion-MNIST ---------------------------------------------------------------------------------------------------


def _fashion_mnist_cache(cache_root: Path, hf_cache: str | None) -> Path:
    """Path of the converted Fashion-MNIST DatasetDict, converting it first if no complete cache exists."""
    final = cache_root / _FASHION_MNIST_CACHE
    if final.exists():
        return final
    idx_dir = Path(os.environ.get("GROWRES_FASHION_MNIST_DIR") or _FASHION_MNIST_DIR)
    arrays = _read_fashion_mnist_idx(idx_dir) if idx_dir.is_dir() else _fashion_mnist_from_hub(hf_cache)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=FASHION_MNIST_CLASSES)})
    dataset = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {"image": list(_to_cifar_shape(images)), "label": labels}, features=features
            )
            for split, (images, labels) in arrays.items()
        }
    )
    cache_root.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename: a killed conversion leaves only a temp folder, never a half cache,
    # and concurrent ranks converting at once each rename a complete copy.
    tmp = Path(tempfile.mkdtemp(prefix=f".{_FASHION_MNIST_CACHE}.", dir=cache_root))
    tmp.chmod(0o755)  # mkdtemp's 0700 would lock other users out of a shared $GROWRES_CACHE
    try:
        dataset.save_to_disk(str(tmp))
        os.rename(tmp, final)
    except OSError:
        if not final.exists():  # a real failure, not another process winning the rename
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _to_cifar_shape(grey: np.ndarray) -> np.ndarray:
    """N x 28 x 28 grey -> N x 32 x 32 x 3: zero border (the background is black) and three equal channels."""
    padded = np.pad(grey, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(padded[..., None], 3, axis=-1)


def _read_fashion_mnist_idx(idx_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(idx_dir / f"{prefix}-images-idx3-ubyte.gz", magic=2051)
        labels = _read_idx(idx_dir / f"{prefix}-labels-idx1-ubyte.gz", magic=2049)
        if len(images) != len(labels):
            raise GrowresError(f"Fashion-MNIST {split} files in {idx_dir} disagree in length; reinstall the package.")
        arrays[split] = (images, labels.astype(np.int64))
    return arrays


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an IDX file: a big-endian magic number (2051 images, 2049 labels), the dimensions, then uint8 data."""
    if not path.is_file():
        raise GrowresError(f"Fashion-MNIST file {path} is missing; {_FASHION_MNIST_HINT}.")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = magic - 2048
    found, *shape = struct.unpack(f">{1 + ndim}I", raw[: 4 * (1 + ndim)])
    if found != magic or len(raw) != 4 * (1 + ndim) + int(np.prod(shape)):
        raise GrowresError(f"{path} is not a valid IDX file; reinstall dataset-fashion-mnist.")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 * (1 + ndim)).reshape(shape)


def _fashion_mnist_from_hub(hf_cache: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    spec = DATASETS["fashion-mnist"]
    try:
        hub = datasets.load_dataset(spec.hub_id, cache_dir=hf_cache)
    except OSError as err:  # offline, unreachable, or any Hub HTTP error
        raise GrowresError(f"Fashion-MNIST not found: {_FASHION_MNIST_HINT} ({type(err).__name__}: {err}).") from err
    arrays = {}
    for split in ("train", "test"):
        batch = hub[split].cast_column(spec.image_column, datasets.Image(mode="L")).with_format("numpy")[:]
        arrays[split] = (batch[spec.image_column], batch[spec.label_column].astype(np.int64))
    return arrays
