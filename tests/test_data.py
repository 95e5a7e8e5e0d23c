"""Behaviour of growres.data: loading image datasets as uint8 tensors, Fashion-MNIST caching, augmentation."""

import dataclasses
import gzip
import json
import math
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value

from growres import data as gdata
from growres.data import DATASETS, ImageData, dataset_fingerprint, load_image_data
from growres.errors import GrowresError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# name -> (image column, label columns in feature order (the first one named is the task), class counts, size)
SCHEMAS = {
    "cifar10": ("img", ["label"], [10], 32),
    # coarse_label first: the loader must still pick the 100-class fine label
    "cifar100": ("img", ["coarse_label", "fine_label"], [20, 100], 32),
    "stl10": ("image", ["label"], [10], 96),
}
TASK_LABEL = {"cifar10": "label", "cifar100": "fine_label", "stl10": "label"}
SPLIT_SIZES = {"train": 12, "test": 5}


def _split(schema: str, n: int, seed: int) -> Dataset:
    image_col, label_cols, classes, size = SCHEMAS[schema]
    rng = np.random.default_rng(seed)
    columns = {image_col: [PIL.Image.fromarray(a) for a in rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)]}
    features = {image_col: Image()}
    for col, k in zip(label_cols, classes, strict=True):
        columns[col] = rng.integers(0, k, n).tolist()
        features[col] = ClassLabel(names=[f"{col}{i}" for i in range(k)])
    return Dataset.from_dict(columns, features=Features(features))


@pytest.fixture(scope="module")
def local_sets(tmp_path_factory):
    """Each schema saved as a DatasetDict folder and as a parquet folder, plus the in-memory splits to compare."""
    root = tmp_path_factory.mktemp("local_sets")
    out = {}
    for i, schema in enumerate(SCHEMAS):
        dd = DatasetDict(
            {split: _split(schema, n, seed=10 * i + j) for j, (split, n) in enumerate(SPLIT_SIZES.items())}
        )
        dd.save_to_disk(str(root / f"{schema}-disk"))
        (root / f"{schema}-parquet").mkdir()
        for split, ds in dd.items():
            ds.to_parquet(str(root / f"{schema}-parquet" / f"{split}.parquet"))
        out[schema] = {"dd": dd, "disk": root / f"{schema}-disk", "parquet": root / f"{schema}-parquet"}
    return out


@pytest.fixture()
def hf_cache(tmp_path):
    return tmp_path / "cache"


def _pixels(ds: Dataset, column: str) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(im) for im in ds[column]])).permute(0, 3, 1, 2)


@pytest.mark.parametrize("layout", ["disk", "parquet"])
@pytest.mark.parametrize("schema", list(SCHEMAS))
def test_local_dataset_layouts(local_sets, schema, layout, hf_cache):
    image_col, _, _, size = SCHEMAS[schema]
    src = local_sets[schema]
    data = load_image_data(None, dataset_id=str(src[layout]), cache_dir=hf_cache)

    assert data.name == str(src[layout])
    assert data.pad == 4  # no spec given: the paper's default for small images
    for split, images, labels in (
        ("train", data.train_images, data.train_labels),
        ("test", data.test_images, data.test_labels),
    ):
        assert images.dtype == torch.uint8 and images.shape == (SPLIT_SIZES[split], 3, size, size)
        assert labels.dtype == torch.int64
        assert torch.equal(images, _pixels(src["dd"][split], image_col))
        assert labels.tolist() == src["dd"][split][TASK_LABEL[schema]]
    label_feature = src["dd"]["train"].features[TASK_LABEL[schema]]
    assert data.num_classes == label_feature.num_classes
    assert data.class_names == label_feature.names


@pytest.mark.parametrize(
    ("dataset", "schema", "pad", "published"),
    [("cifar10", "cifar10", 4, True), ("cifar100", "cifar100", 4, True), ("stl10", "stl10", 12, False)],
)
def test_known_name_with_dataset_id_uses_spec(local_sets, dataset, schema, pad, published, hf_cache):
    data = load_image_data(dataset, dataset_id=str(local_sets[schema]["disk"]), cache_dir=hf_cache)
    spec = DATASETS[dataset]
    assert data.pad == pad == spec.pad
    assert data.num_classes == (100 if schema == "cifar100" else 10)
    if published:
        assert (data.mean, data.std) == (spec.mean, spec.std)
    else:
        # two float64 means of n pixels (a sum of n here, of 256 per-value counts in the loader, then a division):
        # ≲ (n + 260) u64 apart, worst case
        n = data.train_images[:, 0].numel()
        assert data.mean == pytest.approx(data.train_images.double().div(255).mean(dim=(0, 2, 3)).tolist(),
                                          rel=(n + 260) * torch.finfo(torch.float64).eps / 2)


def test_explicit_columns_win_over_guessing(local_sets, hf_cache):
    src = local_sets["cifar100"]
    data = load_image_data(
        None, dataset_id=str(src["parquet"]), image_column="img", label_column="coarse_label", cache_dir=hf_cache
    )
    assert data.num_classes == 20
    assert data.train_labels.tolist() == src["dd"]["train"]["coarse_label"]


def test_default_dataset_argument_with_dataset_id_guesses_columns(local_sets, hf_cache):
    # dataset keeps its default ("fashion-mnist"), whose preferred columns image/label are absent here
    data = load_image_data(dataset_id=str(local_sets["cifar100"]["disk"]), cache_dir=hf_cache)
    assert data.num_classes == 100


def test_max_samples_take_the_first_examples(local_sets, hf_cache):
    src = local_sets["cifar10"]
    data = load_image_data(
        None, dataset_id=str(src["disk"]), max_train_samples=5, max_eval_samples=100, cache_dir=hf_cache
    )
    assert data.train_images.shape[0] == 5 and data.test_images.shape[0] == SPLIT_SIZES["test"]
    assert data.train_labels.tolist() == src["dd"]["train"]["label"][:5]
    assert torch.equal(data.train_images, _pixels(src["dd"]["train"].select(range(5)), "img"))


def _save_pair(path: Path, train: Dataset, test: Dataset) -> str:
    DatasetDict({"train": train, "validation": test}).save_to_disk(str(path))
    return str(path)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_any_image_mode_becomes_rgb(tmp_path, mode):
    rng = np.random.default_rng(0)
    pil = [PIL.Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).convert(mode) for _ in range(4)]
    ds = Dataset.from_dict(
        {"image": pil, "label": [0, 1, 0, 1]}, features=Features({"image": Image(), "label": Value("int64")})
    )
    data = load_image_data(None, dataset_id=_save_pair(tmp_path / "ds", ds, ds))  # "validation" stands in for test
    expected = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in pil])).permute(0, 3, 1, 2)
    assert torch.equal(data.train_images, expected)
    # no ClassLabel: classes come from the largest label
    assert (data.num_classes, data.class_names) == (2, ["0", "1"])


def test_normalize_standardises_the_training_set(local_sets, hf_cache):
    data = load_image_data(None, dataset_id=str(local_sets["stl10"]["disk"]), cache_dir=hf_cache)
    x = data.normalize(data.train_images)
    assert x.dtype == torch.float32 and x.shape == data.train_images.shape
    # float32 rounding (u = eps/2): each x = (p / 255 - mean) / std carries ≲ 3 u / std + 2 u |x| (the three steps,
    # mean and std rounded to float32); a float32 mean or variance of n terms adds ≲ (log2(n) + 2) u (cascade sums)
    u, n, big = torch.finfo(torch.float32).eps / 2, x[:, 0].numel(), x.abs().max().item()
    per_pixel = 3 * u / min(data.std) + 2 * u * big
    assert x.mean(dim=(0, 2, 3)).tolist() == pytest.approx([0, 0, 0], abs=per_pixel + (math.log2(n) + 2) * u * big)
    assert x.std(dim=(0, 2, 3), correction=0).tolist() == pytest.approx(  # std: half the variance's relative error
        [1, 1, 1], abs=big * per_pixel + (math.log2(n) / 2 + 2) * u)


def test_fingerprint_is_json_stable(local_sets, hf_cache):
    data = load_image_data("stl10", dataset_id=str(local_sets["stl10"]["disk"]), cache_dir=hf_cache)
    fp = dataset_fingerprint(data)
    assert fp == {
        "name": str(local_sets["stl10"]["disk"]),
        "num_classes": 10,
        "image_size": [3, 96, 96],
        "num_train": SPLIT_SIZES["train"],
        "num_test": SPLIT_SIZES["test"],
    }
    assert json.loads(json.dumps(fp)) == fp


@pytest.mark.parametrize(
    ("name", "hub_id", "image", "label", "pad", "batch"),
    [
        ("cifar10", "uoft-cs/cifar10", "img", "label", 4, 100),
        ("cifar100", "uoft-cs/cifar100", "img", "fine_label", 4, 100),
        ("stl10", "tanganke/stl10", "image", "label", 12, 32),
        ("fashion-mnist", "zalando-datasets/fashion_mnist", "image", "label", 4, 100),
    ],
)
def test_dataset_specs_follow_the_paper(name, hub_id, image, label, pad, batch):
    spec = DATASETS[name]
    assert (spec.name, spec.hub_id, spec.image_column, spec.label_column) == (name, hub_id, image, label)
    assert (spec.pad, spec.batch_size) == (pad, batch)


# augmentation ------------------------------------------------------------------------------------------------------


def _identity_data(pad: int) -> ImageData:
    """ImageData whose normalize is x / 255, so augmented pixels can be read back exactly."""
    empty = torch.zeros(0, 3, 1, 1, dtype=torch.uint8)
    labels = torch.zeros(0, dtype=torch.int64)
    return ImageData("t", empty, labels, empty, labels, 1, ["a"], (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), pad)


def _pattern(n: int, size: int = 6) -> torch.Tensor:
    """n copies of an image whose 3*size*size pixels all differ and are non-zero, so any crop is identifiable."""
    return (1 + torch.arange(3 * size * size)).to(torch.uint8).view(1, 3, size, size).repeat(n, 1, 1, 1)


def test_augment_is_a_padded_translation_with_random_flips():
    pad, n, size = 2, 400, 6
    data = _identity_data(pad)
    images = _pattern(n, size)
    out = data.augment(images, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == images.shape
    pixels = (out * 255).round().to(torch.uint8)
    padded = torch.nn.functional.pad(images[0], (pad, pad, pad, pad))
    candidates = {
        (dy, dx, flip): crop.flip(-1) if flip else crop
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
        for flip in (False, True)
        for crop in [padded[:, dy : dy + size, dx : dx + size]]
    }
    seen = []
    for sample in pixels:
        matches = [key for key, crop in candidates.items() if torch.equal(sample, crop)]
        assert len(matches) == 1  # every output is exactly one shifted (maybe mirrored) window of the zero-padded image
        seen.append(matches[0])
    assert {(dy, dx) for dy, dx, _ in seen} == {(dy, dx) for dy, dx, _ in candidates}  # all shifts occur
    flipped = sum(flip for _, _, flip in seen) / n
    assert 0.4 < flipped < 0.6


def test_augment_is_reproducible_from_generator_or_global_rng():
    data = _identity_data(4)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    a = data.augment(images, generator=torch.Generator().manual_seed(1))
    b = data.augment(images, generator=torch.Generator().manual_seed(1))
    c = data.augment(images, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # restoring the global RNG state (what accelerate's load_state does) replays the same augmentation
    state = torch.get_rng_state()
    d = data.augment(images)
    torch.set_rng_state(state)
    assert torch.equal(d, data.augment(images))


@pytest.mark.parametrize("image_size", [12, 4])  # up and down
def test_image_size_resizes_each_batch_after_the_crop(image_size):
    data = dataclasses.replace(_identity_data(2), mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4), image_size=image_size)
    images = torch.randint(0, 256, (5, 3, 6, 6), dtype=torch.uint8)
    stored = dataclasses.replace(data, image_size=None)
    expected = torch.nn.functional.interpolate(stored.normalize(images), size=(image_size, image_size),
                                               mode="bilinear", align_corners=False, antialias=True)
    # exact: the same standardisation, then the same resize (per image: a batch of one gives the same pixels)
    torch.testing.assert_close(data.normalize(images), expected, rtol=0, atol=0)
    torch.testing.assert_close(data.normalize(images[0]), expected[0], rtol=0, atol=0)  # one image, C x H x W
    crop = torch.Generator().manual_seed(3)
    torch.testing.assert_close(data.augment(images, generator=crop),  # the crop at the stored size, then the resize
                               torch.nn.functional.interpolate(
                                   stored.augment(images, generator=torch.Generator().manual_seed(3)),
                                   size=(image_size, image_size), mode="bilinear", antialias=True),
                               rtol=0, atol=0)
    assert data.input_size == (3, image_size, image_size) and stored.input_size == (3, 1, 1)


@pytest.mark.parametrize(
    ("method", "images", "match"),
    [
        ("augment", torch.zeros(2, 3, 8, 8), "uint8"),
        ("normalize", torch.zeros(3, 8, 8, dtype=torch.int64), "uint8"),
        ("augment", torch.zeros(3, 8, 8, dtype=torch.uint8), "batch"),
    ],
)
def test_augment_and_normalize_reject_wrong_inputs(method, images, match):
    with pytest.raises(GrowresError, match=match):
        getattr(_identity_data(4), method)(images)


# errors --------------------------------------------------------------------------------------------------------------


def test_single_split_sources_are_refused(local_sets, tmp_path):
    single = tmp_path / "single"
    local_sets["cifar10"]["dd"]["train"].save_to_disk(str(single))
    with pytest.raises(GrowresError, match="train.*test"):
        load_image_data(None, dataset_id=str(single))
    with pytest.raises(GrowresError, match="splits \\['train'\\].*folder"):
        load_image_data(None, dataset_id=str(local_sets["cifar10"]["parquet"] / "train.parquet"), cache_dir=tmp_path)


LOCAL = "<local cifar10 folder>"  # replaced by the fixture's path


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "imagenet"}, "Unknown dataset 'imagenet'.*cifar10.*dataset_id"),
        ({"dataset": None}, "dataset_id"),
        ({"dataset": None, "dataset_id": LOCAL, "max_train_samples": 0}, "max_train_samples must be a positive"),
        ({"dataset": None, "dataset_id": LOCAL, "image_size": -8}, "image_size must be a positive"),
        (
            {"dataset_id": LOCAL, "image_column": "picture"},
            "no column 'picture'.*available columns: \\['img', 'label'\\]",
        ),
        ({"dataset_id": LOCAL, "label_column": "class"}, "no column 'class'.*'img', 'label'"),
        ({"dataset_id": LOCAL, "image_column": "label"}, "not images"),
    ],
)
def test_user_mistakes_raise_growres_error(local_sets, kwargs, match):
    kwargs = {k: str(local_sets["cifar10"]["disk"]) if v == LOCAL else v for k, v in kwargs.items()}
    with pytest.raises(GrowresError, match=match):
        load_image_data(**kwargs)


def test_images_of_different_sizes_are_refused(tmp_path):
    pil = [PIL.Image.new("RGB", (8, 8)), PIL.Image.new("RGB", (8, 6))]
    ds = Dataset.from_dict({"img": pil, "label": [0, 1]}, features=Features({"img": Image(), "label": ClassLabel(2)}))
    with pytest.raises(GrowresError, match="differ in size.*8x6.*8x8"):
        load_image_data(None, dataset_id=_save_pair(tmp_path / "ds", ds, ds))


def test_missing_column_in_eval_split_is_named(tmp_path, local_sets):
    train = local_sets["cifar10"]["dd"]["train"]
    test = local_sets["cifar10"]["dd"]["test"].rename_column("label", "target")
    with pytest.raises(GrowresError, match="eval split has no column 'label'.*'target'"):
        load_image_data(None, dataset_id=_save_pair(tmp_path / "ds", train, test))


def test_offline_hub_failures_explain_what_to_do(tmp_path):
    """Run in a subprocess: HF_HUB_OFFLINE is read when huggingface_hub and datasets are imported."""
    script = textwrap.dedent(
        """
        from growres.data import load_image_data
        from growres.errors import GrowresError
        for kwargs in ({}, {"dataset": None, "dataset_id": "nobody/no-such-dataset"}):
            try:
                load_image_data(cache_dir=CACHE, **kwargs)
            except GrowresError as err:
                print("GrowresError:", err)
        """
    ).replace("CACHE", repr(str(tmp_path / "cache")))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "GROWRES_FASHION_MNIST_DIR": str(tmp_path / "missing"),
    }
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stdout.splitlines() if line.startswith("GrowresError:")]
    assert len(lines) == 2, result.stdout + result.stderr
    assert "Fashion-MNIST not found" in lines[0] and "apt-get install dataset-fashion-mnist" in lines[0]
    assert "'nobody/no-such-dataset'" in lines[1] and "HF_HUB_OFFLINE" in lines[1]


# Fashion-MNIST --------------------------------------------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes())


@pytest.fixture()
def fake_idx(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST in IDX format, so conversion runs in well under a second."""
    rng = np.random.default_rng(0)
    idx = tmp_path / "idx"
    idx.mkdir()
    raw = {}
    for prefix, n in (("train", 7), ("t10k", 3)):
        images, labels = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
        _write_idx(idx / f"{prefix}-images-idx3-ubyte.gz", images, 2051)
        _write_idx(idx / f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)
        raw[prefix] = (images, labels)
    monkeypatch.setenv("GROWRES_FASHION_MNIST_DIR", str(idx))
    return idx, raw


def test_fashion_mnist_conversion_pads_to_rgb32_and_caches(fake_idx, tmp_path, monkeypatch):
    _, raw = fake_idx
    cache = tmp_path / "cache"
    data = load_image_data(cache_dir=cache)
    assert data.train_images.shape == (7, 3, 32, 32) and data.test_images.shape == (3, 3, 32, 32)
    assert torch.equal(
        data.train_images[:, :, 2:30, 2:30],
        torch.from_numpy(raw["train"][0]).to(torch.uint8)[:, None].expand(-1, 3, -1, -1),
    )
    assert data.test_labels.tolist() == raw["t10k"][1].tolist()
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert sorted(p.name for p in cache.iterdir()) == ["fashion-mnist-v1"]  # no temp folder left behind

    monkeypatch.setenv("GROWRES_FASHION_MNIST_DIR", str(tmp_path / "gone"))  # only the cache can serve now
    again = load_image_data(cache_dir=cache)
    assert torch.equal(again.train_images, data.train_images)


def test_failed_conversion_leaves_no_cache(fake_idx, tmp_path, monkeypatch):
    cache = tmp_path / "cache"

    def crash(self, path, **kwargs):
        Path(path, "partial").write_text("half written")
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(DatasetDict, "save_to_disk", crash)
        with pytest.raises(OSError, match="disk full"):
            load_image_data(cache_dir=cache)
    assert list(cache.iterdir()) == []
    assert load_image_data(cache_dir=cache).train_images.shape[0] == 7  # the next call converts afresh


def test_corrupt_idx_file_is_reported(fake_idx, tmp_path):
    idx, _ = fake_idx
    _write_idx(idx / "train-labels-idx1-ubyte.gz", np.zeros(7), magic=1234)
    with pytest.raises(GrowresError, match="not a valid IDX file"):
        load_image_data(cache_dir=tmp_path / "cache")


def test_fashion_mnist_falls_back_to_the_hub_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("GROWRES_FASHION_MNIST_DIR", str(tmp_path / "missing"))
    hub = DatasetDict(
        {
            split: Dataset.from_dict(
                {"image": [PIL.Image.new("L", (28, 28), color=200)] * n, "label": list(range(n))},
                features=Features({"image": Image(), "label": ClassLabel(names=gdata.FASHION_MNIST_CLASSES)}),
            )
            for split, n in (("train", 4), ("test", 2))
        }
    )
    requested = []
    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id, **kw: requested.append(hub_id) or hub)
    data = load_image_data(cache_dir=tmp_path / "cache")
    assert requested == ["zalando-datasets/fashion_mnist"]
    assert data.train_images.shape == (4, 3, 32, 32)
    assert data.train_images[:, :, 2:30, 2:30].eq(200).all() and data.train_images[:, :, :2].eq(0).all()


@pytest.fixture(scope="module")
def real_fashion(tmp_path_factory):
    if not FASHION_DIR.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    cache = tmp_path_factory.mktemp("fashion-cache")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("GROWRES_FASHION_MNIST_DIR", str(FASHION_DIR))
        start = time.perf_counter()
        data = load_image_data(cache_dir=cache)
        first = time.perf_counter() - start
    return data, cache, first


def test_real_fashion_mnist(real_fashion):
    data, _, _ = real_fashion
    assert data.name == "fashion-mnist" and data.pad == 4 and data.num_classes == 10
    assert data.train_images.shape == (60000, 3, 32, 32) and data.test_images.shape == (10000, 3, 32, 32)
    assert data.train_labels.shape == (60000,) and data.test_labels.shape == (10000,)
    for images in (data.train_images, data.test_images):
        assert images[:, :, :2].eq(0).all() and images[:, :, -2:].eq(0).all()
        assert images[..., :2].eq(0).all() and images[..., -2:].eq(0).all()
        assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    for labels in (data.train_labels, data.test_labels):
        assert labels.min() == 0 and labels.max() == 9
        assert torch.bincount(labels).eq(len(labels) // 10).all()  # Fashion-MNIST is exactly balanced
    with gzip.open(FASHION_DIR / "train-images-idx3-ubyte.gz") as f:
        first_image = np.frombuffer(f.read(16 + 784)[16:], dtype=np.uint8).reshape(28, 28)
    assert torch.equal(data.train_images[0, 0, 2:30, 2:30], torch.from_numpy(first_image.copy()))
    x = data.normalize(data.train_images[::10])
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.01 and (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.01


def test_real_fashion_mnist_second_load_comes_from_cache(real_fashion, monkeypatch):
    data, cache, first = real_fashion

    def no_conversion(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(gdata, "_read_fashion_mnist_idx", no_conversion)
    monkeypatch.setattr(gdata, "_fashion_mnist_from_hub", no_conversion)
    start = time.perf_counter()
    again = load_image_data(cache_dir=cache)
    second = time.perf_counter() - start
    print(f"Fashion-MNIST load: first {first:.1f}s (conversion), second {second:.1f}s (cache)")
    assert torch.equal(again.train_images, data.train_images) and torch.equal(again.test_labels, data.test_labels)
    assert again.mean == data.mean
