"""`growres train` / examples/train.py: run folders, export, resume mid-growth, bad input, datasets."""
import copy
import json
import math
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml
from conftest import TINY_RUN_ARGS, needs_fashion_mnist, run_growres
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage
from safetensors.torch import load_file, save_file

import growres  # registers the models for local-dir: loading
from growres.cli import main
from growres.data import load_image_data
from growres.runs import RunFolder

EXAMPLE = Path(__file__).parents[1] / "examples" / "train.py"


def assert_same_weights(dir_a: Path, dir_b: Path, atol: float = 0) -> None:
    """Exact by default: a resumed run repeats the original's steps, the same ops on the same state and batches (one
    thread a process, the same kernels), so it ends on the same bits."""
    a, b = load_file(dir_a / "model.safetensors"), load_file(dir_b / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


@needs_fashion_mnist
def test_run_folder_has_everything(tiny_run):
    run = RunFolder(tiny_run)
    config = run.config()
    assert config["model"] == "growres_resnet50i" and config["cycles"] == [1, 2] and config["batch_size"] == 50
    rows = run.metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["layers"] for r in rows] == [[2, 2, 2], [4, 4, 4], [8, 8, 8]]
    assert [r["step_size"] for r in rows] == [1.0, 0.5, 0.25]
    for row in rows:
        assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_seconds", "cumulative_seconds",
                "images_per_second"} <= row.keys()
        assert row["images_per_second"] > 0
    assert rows[-1]["cumulative_seconds"] >= sum(r["epoch_seconds"] for r in rows) - 1e-6
    assert [(g["step"], g["layers"], g["step_size"]) for g in run.growth_records()] == [
        (12, [4, 4, 4], 0.5), (24, [8, 8, 8], 0.25)]
    assert run.plot_path.stat().st_size > 10_000
    summary = run.summary()
    assert summary["test_acc"] == rows[-1]["test_acc"] and len(summary["cycles"]) == 3
    assert [d.name for d in run.cycle_dirs()] == ["cycle-1", "cycle-2", "cycle-3"]
    # 36 steps on 600 real images already learn something: twice the chance level
    assert rows[-1]["train_acc"] > 0.2


@needs_fashion_mnist
def test_exported_models_rebuild_exactly_through_timm(tiny_run, growres_env):
    run = RunFolder(tiny_run)
    model = timm.create_model(f"local-dir:{run.final_dir}", pretrained=True).eval()
    assert model.layers == (8, 8, 8) and model.step_size == 0.25
    state = load_file(run.final_dir / "model.safetensors")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # its accuracy on the run's test images, standardised as its exported config says (the statistics of the
    # run's 600 training images, not of the full set), is the one the run reported
    data = load_image_data("fashion-mnist", max_eval_samples=300, cache_dir=growres_env["GROWRES_CACHE"])
    config = timm.data.resolve_data_config(model=model)
    mean, std = (torch.tensor(config[k]).view(-1, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        predictions = model((data.test_images / 255 - mean) / std).argmax(-1)
    accuracy = (predictions == data.test_labels).float().mean().item()
    assert accuracy == pytest.approx(run.summary()["test_acc"], abs=1e-6)
    for cycle_dir, layers in zip(run.cycle_dirs(), [(2, 2, 2), (4, 4, 4), (8, 8, 8)]):
        cycle_model = timm.create_model(f"local-dir:{cycle_dir}", pretrained=True)
        assert cycle_model.layers == layers
    assert_same_weights(run.cycle_dirs()[-1], run.final_dir, atol=0)
    assert not list(tiny_run.rglob("*.bin")) or all("checkpoints" in str(p) for p in tiny_run.rglob("*.bin"))


def epoch_lines(result: subprocess.CompletedProcess) -> list[str]:
    """What a `growres train` process printed for the epochs it trained and the interpolations it made."""
    return [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith(("epoch ", "interpolated "))]


def assert_resumed_from(result: subprocess.CompletedProcess, checkpoint: Path, run_dir: Path, reference: Path,
                        steps_per_epoch: int = 12, epochs: int = 3):
    """The resumed process trained only what came after ``checkpoint``; the rows before it are the checkpoint's.
    (Defaults: TINY_RUN_ARGS, 12 steps an epoch.)"""
    saved = json.loads((checkpoint / "growth.json").read_text())
    first_epoch = saved["scheduler"]["step"] // steps_per_epoch + 1
    growths = [g for g in RunFolder(reference).growth_records() if g["step"] > saved["scheduler"]["step"]]
    expected = [f"epoch {e}" for e in range(first_epoch, epochs + 1)]
    expected += [f"interpolated at epoch {g['epoch']:g}" for g in growths]
    assert sorted(epoch_lines(result)) == sorted(expected), result.stdout
    # rows and growth records from before the checkpoint come from it, timings included: they were not re-run
    done = len(saved["run"]["history"])
    assert done and RunFolder(run_dir).metrics()[:done] == saved["run"]["history"]
    assert RunFolder(run_dir).growth_records()[:len(saved["run"]["growth"])] == saved["run"]["growth"]


@needs_fashion_mnist
def test_resume_uses_the_checkpoint(tiny_run, growres_env, tmp_path):
    """Resume in the middle of cycle 2 (step 18 of 36) from a copy of the checkpoint whose final norm has counted 1000
    more batches.

    The count is saved, loaded and counted on (one a training step), but with the norm's momentum set it enters no
    computation: the resumed run trains exactly as the original did, bit for bit, and ends with the original's count
    plus 1000: only state read from the checkpoint gives that. (A changed weight would not do: the head bias raised
    by 1 is invisible to the loss in exact arithmetic only; float32 rounds z + 1 otherwise than z, and 18 SGD steps
    carry that to ~5e-5 in the bias, by no bound that follows from float32's precision.)"""
    altered = tmp_path / "step-00000018"
    shutil.copytree(tiny_run / "checkpoints" / "step-00000018", altered)
    weights = load_file(altered / "model.safetensors")
    weights["norm.num_batches_tracked"] += 1000
    save_file(weights, altered / "model.safetensors", metadata={"format": "pt"})
    resumed = tmp_path / "resumed"
    result = run_growres("train", *TINY_RUN_ARGS, "--resume", str(altered), "--output-dir", str(resumed),
                         env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_resumed_from(result, altered, resumed, tiny_run)
    final = load_file(resumed / "final" / "model.safetensors")
    original = load_file(tiny_run / "final" / "model.safetensors")
    assert final.pop("norm.num_batches_tracked") - original.pop("norm.num_batches_tracked") == 1000
    assert final.keys() == original.keys()
    assert [k for k in final if not torch.equal(final[k], original[k])] == []  # every other tensor, exactly
    assert [g["layers"] for g in RunFolder(resumed).growth_records()] == [[4, 4, 4], [8, 8, 8]]


@pytest.mark.slow
@needs_fashion_mnist
def test_resume_right_after_growth_continues_to_the_same_weights(tiny_run, growres_env, tmp_path):
    """step-12 is taken right after the first interpolation: the depth is rebuilt before the weights load."""
    source = tiny_run / "checkpoints" / "step-00000012"
    resumed = tmp_path / "resumed"
    result = run_growres("train", *TINY_RUN_ARGS, "--resume", str(source), "--output-dir", str(resumed),
                         env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_resumed_from(result, source, resumed, tiny_run)
    assert_same_weights(tiny_run / "final", resumed / "final")
    assert [r["test_acc"] for r in RunFolder(resumed).metrics()] == [  # exact: the same evaluations of the same weights
        r["test_acc"] for r in RunFolder(tiny_run).metrics()]


# Runs `growres train` and SIGKILLs itself inside the save of checkpoint step-N (argv[1]): after accelerate has
# written its files into the temporary folder, before growth.json and the rename.
KILL_WHILE_SAVING = """
import os, signal, sys
from accelerate import Accelerator
from growres.cli import main

save_state, target = Accelerator.save_state, f"step-{int(sys.argv[1]):08d}"

def save_then_die(self, output_dir=None, **kwargs):
    result = save_state(self, output_dir, **kwargs)
    if os.path.basename(str(output_dir)).endswith(target):
        os.kill(os.getpid(), signal.SIGKILL)
    return result

Accelerator.save_state = save_then_die
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@needs_fashion_mnist
def test_a_run_killed_while_writing_a_checkpoint_resumes_from_the_last_complete_one(tiny_run, growres_env, tmp_path):
    run_dir = tmp_path / "killed"
    killed = subprocess.run([sys.executable, "-c", KILL_WHILE_SAVING, "13", "train", *TINY_RUN_ARGS,
                             "--checkpoint-every", "1", "--output-dir", str(run_dir)],
                            env=growres_env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    half = run_dir / "checkpoints" / ".tmp-step-00000013"
    assert (half / "model.safetensors").is_file() and not (half / "growth.json").exists()  # killed mid-save
    complete = RunFolder(run_dir).checkpoints()
    assert [c.name for c in complete] == [f"step-{n:08d}" for n in range(1, 13)]
    assert all((c / "growth.json").is_file() and (c / "model.safetensors").is_file() for c in complete)
    assert not (run_dir / "final").exists()

    result = run_growres("train", *TINY_RUN_ARGS, "--resume", "latest", "--output-dir", str(run_dir),
                         env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_resumed_from(result, complete[-1], run_dir, tiny_run)  # step 12: right after the first interpolation
    assert_same_weights(tiny_run / "final", run_dir / "final")


@pytest.mark.slow  # a training run of its own
@needs_fashion_mnist
def test_config_file_with_flags_winning(growres_env, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"model": "growres_resnet14", "epochs": 2, "cycles": [1], "batch_size": 100,
                                      "max_train_samples": 200, "max_eval_samples": 100, "lr_max": 0.2}))
    result = run_growres("train", "--config", str(config), "--epochs", "3", "--cycles", "1,2",
                         "--output-dir", str(tmp_path / "run"), env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    resolved = RunFolder(tmp_path / "run").config()
    assert resolved["model"] == "growres_resnet14" and resolved["lr_max"] == 0.2  # from the file
    assert resolved["epochs"] == 3 and resolved["cycles"] == [1, 2]  # flags win
    assert resolved["grow"] is False  # a fixed-depth model: the LR restarts, the depth stays
    rows = RunFolder(tmp_path / "run").metrics()
    assert [r["layers"] for r in rows] == [[2, 2, 2]] * 3 and RunFolder(tmp_path / "run").growth_records() == []
    assert "test accuracy" in result.stdout and str(tmp_path / "run") in result.stdout


# Other timm families on Fashion-MNIST (32x32): a ViT built for the data's size through img_size, a ResNet, a
# ConvNeXt at --img-size 64 and a ResNetV2, kept small with --model-kwargs, which must survive growth and export.
# (model, extra flags, blocks before and after growth, the exported model_args that say so, the input side)
TIMM_MODELS = [
    ("vit_tiny_patch16_224", ["--model-kwargs", "patch_size=8", "embed_dim=32", "depth=2", "num_heads=2"], [2],
     [4], dict(depth=4, patch_size=8), 32),
    pytest.param("resnet18", [], [2, 2, 2, 2], [4, 4, 4, 4], dict(layers=[4, 4, 4, 4]), 32, marks=pytest.mark.slow),
    ("convnext_atto", ["--img-size", "64", "--model-kwargs", "dims=[16,32,48,64]"], [2, 2, 6, 2], [4, 4, 12, 4],
     dict(depths=[4, 4, 12, 4], dims=[16, 32, 48, 64]), 64),
    ("resnetv2_50", ["--model-kwargs", "channels=[32,64,128,256]", "stem_chs=16"], [3, 4, 6, 3], [6, 8, 12, 6],
     dict(layers=[6, 8, 12, 6], channels=[32, 64, 128, 256]), 32),
]


@pytest.mark.slow  # a training run of its own
@needs_fashion_mnist
@pytest.mark.parametrize("model, extra_args, first, grown, grown_args, size", TIMM_MODELS)
def test_timm_models_train_on_fashion_mnist(growres_env, tmp_path, model, extra_args, first, grown, grown_args,
                                            size):
    run_dir = tmp_path / "run"
    result = run_growres("train", "--model", model, *extra_args, "--epochs", "2", "--cycles", "1",
                         "--max-train-samples", "200", "--max-eval-samples", "100", "--batch-size", "50",
                         "--lr-max", "0.05", "--output-dir", str(run_dir), env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunFolder(run_dir)
    assert [r["layers"] for r in run.metrics()] == [first, grown]
    config = json.loads((run.final_dir / "config.json").read_text())
    assert {k: config["model_args"][k] for k in grown_args} == grown_args
    assert config["pretrained_cfg"]["input_size"] == [3, size, size]
    reloaded = timm.create_model(f"local-dir:{run.final_dir}", pretrained=True).eval()
    assert reloaded(torch.zeros(1, 3, size, size)).shape == (1, 10)


@pytest.mark.slow  # a training run of its own
@needs_fashion_mnist
def test_img_size_and_model_kwargs_from_a_config_file(growres_env, tmp_path):
    """--img-size resizes the data and builds the ViT for it; --model-kwargs reach timm from YAML and come back."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "model": "vit_tiny_patch16_224", "img_size": 48, "epochs": 1, "max_train_samples": 100,
        "max_eval_samples": 50, "batch_size": 50, "lr_max": 0.05,
        "model_kwargs": {"patch_size": 16, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0},
    }))
    result = run_growres("train", "--config", str(config), "--no-grow", "--output-dir", str(tmp_path / "run"),
                         env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunFolder(tmp_path / "run")
    assert run.config()["model_kwargs"] == yaml.safe_load(config.read_text())["model_kwargs"]
    exported = json.loads((run.final_dir / "config.json").read_text())
    assert exported["pretrained_cfg"]["input_size"] == [3, 48, 48]
    assert exported["model_args"]["img_size"] in (48, [48, 48]) and exported["model_args"]["mlp_ratio"] == 2.0
    reloaded = timm.create_model(f"local-dir:{run.final_dir}", pretrained=True)
    assert reloaded.patch_embed.grid_size == (3, 3)  # 48 / 16: the model saw the resized images
    # flags win over the file: other kwargs make another run, which a checkpoint of this one would refuse
    assert run.summary()["num_params"] == sum(p.numel() for p in reloaded.parameters())


@pytest.mark.slow
@needs_fashion_mnist
def test_resume_keeps_model_kwargs_and_img_size(growres_env, tmp_path):
    """A checkpoint's identity holds --model-kwargs and --img-size: the same ones continue it, others are refused."""
    vit = ["--model", "vit_tiny_patch16_224", "--epochs", "2", "--cycles", "1", "--max-train-samples", "100",
           "--max-eval-samples", "50", "--batch-size", "50", "--lr-max", "0.05", "--checkpoint-every", "epoch"]
    kwargs = ["--model-kwargs", "patch_size=8", "embed_dim=32", "depth=2", "num_heads=2"]
    result = run_growres("train", *vit, *kwargs, "--img-size", "40", "--output-dir", str(tmp_path / "a"),
                         env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = str(tmp_path / "a" / "checkpoints" / "step-00000002")  # right after the growth at epoch 1
    resumed = run_growres("train", *vit, *kwargs, "--img-size", "40", "--resume", checkpoint,
                          "--output-dir", str(tmp_path / "b"), env=growres_env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(tmp_path / "a" / "final", tmp_path / "b" / "final")
    for other in (["--model-kwargs", "patch_size=8", "embed_dim=32", "depth=2", "num_heads=4", "--img-size", "40"],
                  [*kwargs, "--img-size", "48"]):
        refused = run_growres("train", *vit, *other, "--resume", checkpoint, "--output-dir", str(tmp_path / "c"),
                              env=growres_env)
        assert refused.returncode == 2 and "another run" in refused.stderr, refused.stderr[-2000:]


def _image_dataset(tmp_path: Path, columns: tuple[str, str], size: int, n: int = 40, extra=None) -> Path:
    """A tiny dataset with the schema of a Hub dataset (CIFAR: img/label; STL-10: image/label; CIFAR-100: ...)."""
    image_col, label_col = columns
    gen = torch.Generator().manual_seed(0)

    def split(count):
        pixels = torch.randint(0, 256, (count, size, size, 3), dtype=torch.uint8, generator=gen).numpy()
        values = {image_col: [PILImage.fromarray(p) for p in pixels], label_col: [i % 3 for i in range(count)]}
        features = {image_col: Image(), label_col: ClassLabel(names=["a", "b", "c"])}
        for name in extra or ():
            values[name] = [0] * count
            features[name] = ClassLabel(names=["x"])
        return Dataset.from_dict(values, features=Features(features))

    path = tmp_path / f"{image_col}-{size}"
    DatasetDict(train=split(n), test=split(n // 2)).save_to_disk(str(path))
    return path


@pytest.mark.slow  # a training run of its own
@pytest.mark.parametrize("columns, size, extra_args", [
    (("img", "label"), 32, []),  # CIFAR-10 schema
    (("img", "fine_label"), 32, ["--label-column", "fine_label"]),  # CIFAR-100 schema
    (("image", "label"), 96, ["--dataset", "stl10"]),  # STL-10 schema: 96x96, pad 12, batch 32 from the spec
])
def test_local_datasets_with_hub_schemas_train(growres_env, tmp_path, columns, size, extra_args):
    path = _image_dataset(tmp_path, columns, size, extra=("coarse_label",) if columns[1] == "fine_label" else None)
    run_dir = tmp_path / "run"
    result = run_growres("train", "--model", "growres_resnet14", "--dataset-id", str(path), *extra_args,
                         "--epochs", "2", "--cycles", "1", "--output-dir", str(run_dir), env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunFolder(run_dir)
    assert run.summary()["num_classes"] == 3
    assert run.config()["batch_size"] == (32 if "stl10" in extra_args else 100)
    model = timm.create_model(f"local-dir:{run.final_dir}", pretrained=True)
    assert model(torch.zeros(1, 3, size, size)).shape == (1, 3)


@pytest.fixture
def finished_other_run(tiny_run, tmp_path):
    """A copy of the tiny run, to try bad commands against."""
    copy = tmp_path / "existing"
    shutil.copytree(tiny_run, copy)
    return copy


BAD_COMMANDS = [
    (["--dataset", "mnist-nope"], "Unknown dataset"),
    (["--model", "resnet_nope"], "Unknown model"),
    (["--model", "vgg11"], "No growth adapter"),
    (["--cycles", "2,1"], "strictly increasing"),
    (["--cycles", "1,5", "--epochs", "3"], "inside"),
    (["--batch-size", "0"], "positive integer"),
    (["--batch-size", "-5"], "positive integer"),
    (["--checkpoint-every", "often"], "checkpoint-every"),
    (["--strategy", "magic"], "Unknown interpolation strategy 'magic': choose one of copy, identity, stack, "
                              "copy-unscaled."),
    (["--opt", "nope"], "Cannot create optimizer"),
    (["--smoothing", "1.5"], "--smoothing"),
    (["--model", "growres_resnet50i", "--cycles", "1"], "exactly 2"),
    (["--resume", "/nonexistent/checkpoint"], "not a growres checkpoint"),
    (["--model", "convnext_atto", "--img-size", "16"], "convnext_atto cannot take 16x16 images (its total stride"),
    (["--model", "resnet18", "--model-kwargs", "patch_size"], "KEY=VALUE"),
    (["--model", "resnet18", "--model-kwargs", "num_classes=3"], "set by growres"),
    (["--model", "resnet18", "--model-kwargs", "patch_size=4"], "Cannot build resnet18"),
    (["--img-size", "0"], "positive integer"),
    (["--eval-every", "0"], "--eval-every must be a positive integer"),
    (["--stochastic-depth", "1"], "--stochastic-depth (the last block's skip probability) must be in [0, 1)"),
    (["--model", "resnet18", "--stochastic-depth"], "use --drop-path-rate"),
]


def assert_one_line_error(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert err.startswith("growres: error: ") and err.count("\n") == 1 and message in err, err


@needs_fashion_mnist
@pytest.mark.parametrize("args, message", BAD_COMMANDS)
def test_bad_input_gives_one_clear_line(in_process_env, tmp_path, capsys, args, message):
    run_dir = tmp_path / "run"
    code = main(["train", "--epochs", "3", "--max-train-samples", "100", "--output-dir", str(run_dir), *args])
    assert_one_line_error(code, capsys.readouterr().err, message)
    assert not run_dir.exists()  # refused before the run folder is made


def test_bad_input_from_the_command_line_is_one_line_without_a_traceback(growres_env, tmp_path):
    """The same refusals as above, through the installed entry point in a fresh interpreter."""
    result = run_growres("train", "--batch-size", "0", "--output-dir", str(tmp_path / "run"), env=growres_env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["growres: error: --batch-size must be a positive integer, got 0."]


@needs_fashion_mnist
def test_a_failure_after_the_run_folder_is_made_removes_it(tiny_run, in_process_env, tmp_path, capsys):
    """A checkpoint that cannot be loaded fails after the run folder is created: no empty folder is left behind."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_run / "checkpoints" / "step-00000012", broken)
    (broken / "model.safetensors").write_bytes((broken / "model.safetensors").read_bytes()[:1000])
    run_dir = tmp_path / "run"
    code = main(["train", *TINY_RUN_ARGS, "--resume", str(broken), "--output-dir", str(run_dir)])
    assert_one_line_error(code, capsys.readouterr().err, f"Cannot load the checkpoint {broken}")
    assert not run_dir.exists()


def test_missing_column_is_a_clear_error(in_process_env, tmp_path, capsys):
    path = _image_dataset(tmp_path, ("img", "label"), 32)
    capsys.readouterr()  # save_to_disk's progress bars
    code = main(["train", "--dataset-id", str(path), "--label-column", "fine_label", "--output-dir",
                 str(tmp_path / "run")])
    assert_one_line_error(code, capsys.readouterr().err, "fine_label")


def test_missing_data_offline_is_a_clear_error(growres_env, tmp_path):
    env = dict(growres_env, GROWRES_FASHION_MNIST_DIR=str(tmp_path / "nothing"), GROWRES_CACHE=str(tmp_path))
    result = run_growres("train", "--output-dir", str(tmp_path / "run"), env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "dataset-fashion-mnist" in result.stderr


@needs_fashion_mnist
def test_existing_run_folder_is_never_overwritten(finished_other_run, in_process_env, capsys):
    before = {p: p.stat().st_mtime_ns for p in finished_other_run.rglob("*")}
    code = main(["train", *TINY_RUN_ARGS, "--output-dir", str(finished_other_run)])
    assert_one_line_error(code, capsys.readouterr().err, "--overwrite")
    assert {p: p.stat().st_mtime_ns for p in finished_other_run.rglob("*")} == before


@needs_fashion_mnist
def test_resume_from_another_run_is_refused(tiny_run, in_process_env, tmp_path, capsys):
    checkpoint = tiny_run / "checkpoints" / "step-00000012"
    code = main(["train", *TINY_RUN_ARGS[2:], "--model", "growres_wrn50i", "--resume", str(checkpoint),
                 "--output-dir", str(tmp_path / "other")])
    assert_one_line_error(code, capsys.readouterr().err, "belongs to another run (growres_resnet50i on fashion-mnist)")
    assert not (tmp_path / "other").exists()


@needs_fashion_mnist
def test_resume_from_another_datasets_checkpoint_is_refused(tiny_run, in_process_env, tmp_path, capsys):
    """Same model, same flags, other data: the checkpoint's data fingerprint (name, classes, sizes) differs."""
    data = _image_dataset(tmp_path, ("img", "label"), 32)
    capsys.readouterr()  # the dataset's saving progress
    checkpoint = tiny_run / "checkpoints" / "step-00000012"
    code = main(["train", *TINY_RUN_ARGS, "--dataset-id", str(data), "--resume", str(checkpoint),
                 "--output-dir", str(tmp_path / "other")])
    assert_one_line_error(code, capsys.readouterr().err,
                          f"(growres_resnet50i on fashion-mnist); this run is growres_resnet50i on {data}")
    assert not (tmp_path / "other").exists()


@needs_fashion_mnist
def test_default_optimizer_is_classical_momentum_sgd(tiny_run):
    """Section 5.2: SGD with momentum 0.9, not Nesterov's (timm's 'sgd'); TINY_RUN_ARGS leave --opt at its default."""
    assert RunFolder(tiny_run).config()["opt"] == "momentum"
    state = torch.load(tiny_run / "checkpoints" / "step-00000012" / "optimizer.bin", weights_only=True)
    sgd_defaults = set(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1).defaults)
    for group in state["param_groups"]:
        assert set(group) - {"params"} == sgd_defaults  # torch.optim.SGD's state, not another optimizer's
        assert (group["momentum"], group["dampening"], group["nesterov"]) == (0.9, 0, False)


@needs_fashion_mnist
@pytest.mark.parametrize("model, cycles, layers", [
    ("growres_resnet50i", "1,2", [[4, 4, 4], [8, 8, 8]]),  # its own plan: two interpolations
    pytest.param("resnet18", "1", [[4, 4, 4, 4]], marks=pytest.mark.slow),  # 11M parameters: a minute on 2 cores
])
def test_identity_growth_drop_path_and_epoch_checkpoints(growres_env, tmp_path, model, cycles, layers):
    """--strategy identity keeps the function through growth, --drop-path-rate reaches the model, --checkpoint-every
    epoch writes one checkpoint per epoch (2 steps each); the same for a timm ResNet."""
    run_dir = tmp_path / "run"
    result = run_growres("train", "--model", model, "--strategy", "identity", "--drop-path-rate", "0.1",
                         "--checkpoint-every", "epoch", "--epochs", str(len(layers) + 1), "--cycles", cycles,
                         "--max-train-samples", "100", "--max-eval-samples", "20", "--batch-size", "50", "--lr-max",
                         "0.05", "--output-dir", str(run_dir), env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunFolder(run_dir)
    epochs = range(1, len(layers) + 2)
    assert [c.name for c in run.checkpoints()] == [f"step-{2 * e:08d}" for e in epochs]
    assert [json.loads((c / "growth.json").read_text())["epoch"] for c in run.checkpoints()] == list(epochs)
    assert [(g["step"], g["layers"]) for g in run.growth_records()] == [(2 * e, n) for e, n in zip(epochs, layers)]
    assert run.config()["strategy"] == "identity"
    final = json.loads((run.final_dir / "config.json").read_text())["model_args"]
    assert final["drop_path_rate"] == 0.1 and final["layers"] == layers[-1]
    # identity: the model right after the first growth (checkpoint step 2) computes what cycle 1's model computed
    before = timm.create_model(f"local-dir:{run.cycle_dirs()[0]}", pretrained=True).eval()
    after = timm.create_model(f"local-dir:{run.cycle_dirs()[1]}", pretrained=True).eval()
    trained = copy.deepcopy(after)
    after.load_state_dict(load_file(run.checkpoints()[0] / "model.safetensors"))
    x = torch.randn(4, *before.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # exact: new blocks add 0 * G = 0 and old ones compute what they did (scaled by 2 and 0.5: powers of two)
        torch.testing.assert_close(after(x), before(x), atol=0, rtol=0)
        assert not torch.allclose(trained(x), before(x), atol=1e-3)  # the last epoch trained it on


# growres_resnet50i grown by G_stack, 2 steps an epoch, a checkpoint after each (the first right after growth 1)
STACK_RUN_ARGS = ["--model", "growres_resnet50i", "--strategy", "stack", "--epochs", "3", "--cycles", "1,2",
                  "--max-train-samples", "100", "--max-eval-samples", "20", "--batch-size", "50", "--lr-max", "0.05",
                  "--checkpoint-every", "epoch"]


@pytest.fixture(scope="module")
def stack_run(growres_env, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("stack") / "run"
    result = run_growres("train", *STACK_RUN_ARGS, "--output-dir", str(run_dir), env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def stacked_source(key: str, old_layers: tuple[int, ...]) -> str:
    """The key of a growres model's tensor before one stack growth: block i < n of a stage of n is old block i, block
    n + j copies old block j, or block 1 for j = 0 in a stage that starts with a transition (stages 1 and 2)."""
    match = re.fullmatch(r"stages\.(\d+)\.(\d+)\.(.*)", key)
    if match is None:
        return key  # stem, final norm, head
    stage, idx, rest = int(match.group(1)), int(match.group(2)), match.group(3)
    n = old_layers[stage]
    source = idx if idx < n else (1 if stage > 0 and idx == n else idx - n)
    return f"stages.{stage}.{source}.{rest}"


@needs_fashion_mnist
def test_stack_growth_through_growres_train(stack_run, capsys):
    """--strategy stack: each growth repeats every stage after itself with h kept at 1; `growres train --help`
    describes every strategy."""
    run = RunFolder(stack_run)
    assert run.config()["strategy"] == "stack"
    assert [(g["step"], g["layers"], g["step_size"]) for g in run.growth_records()] == [
        (2, [4, 4, 4], 1.0), (4, [8, 8, 8], 1.0)]
    assert [(r["layers"], r["step_size"]) for r in run.metrics()] == [
        ([2, 2, 2], 1.0), ([4, 4, 4], 1.0), ([8, 8, 8], 1.0)]
    final = json.loads((run.final_dir / "config.json").read_text())["model_args"]
    assert (final["layers"], final["step_size"]) == ([8, 8, 8], 1.0)
    # the weights right after the first growth (checkpoint step 2) are cycle 1's, stacked; exact: copies
    before = load_file(run.cycle_dirs()[0] / "model.safetensors")
    after = load_file(run.checkpoints()[0] / "model.safetensors")
    assert {stacked_source(key, (2, 2, 2)) for key in after} == set(before)
    assert [key for key, value in after.items() if not torch.equal(value, before[stacked_source(key, (2, 2, 2))])] \
        == []
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(f"{name}: {growres.get_strategy(name).description}" in help_text for name in growres.STRATEGIES)


@pytest.mark.slow  # a second training run
@needs_fashion_mnist
def test_stack_growth_resumes_right_after_growth_to_the_same_weights(stack_run, growres_env, tmp_path):
    """The checkpoint of step 2, right after the first stack growth: the resumed process rebuilds the stacked depth
    (h still 1) before the weights load, and ends on the uninterrupted run's weights and accuracies, bit for bit."""
    checkpoint = stack_run / "checkpoints" / "step-00000002"
    resumed = tmp_path / "resumed"
    result = run_growres("train", *STACK_RUN_ARGS, "--resume", str(checkpoint), "--output-dir", str(resumed),
                         env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_resumed_from(result, checkpoint, resumed, stack_run, steps_per_epoch=2)
    assert_same_weights(stack_run / "final", resumed / "final")
    assert [(r["layers"], r["step_size"], r["test_acc"]) for r in RunFolder(resumed).metrics()] == [
        (r["layers"], r["step_size"], r["test_acc"]) for r in RunFolder(stack_run).metrics()]


@needs_fashion_mnist
def test_eval_every_evaluates_at_its_epochs_cycle_ends_and_the_last(growres_env, tmp_path):
    """--eval-every 3 over 5 epochs with a cycle ending at epoch 2: the test set is evaluated at epoch 2 (a cycle's
    end), 3 (every third) and 5 (the last) only; the other rows keep their training metrics."""
    run_dir = tmp_path / "run"
    result = run_growres("train", "--model", "growres_resnet14", "--epochs", "5", "--cycles", "2", "--eval-every", "3",
                         "--max-train-samples", "100", "--max-eval-samples", "20", "--batch-size", "50",
                         "--output-dir", str(run_dir), env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunFolder(run_dir)
    rows = run.metrics()
    assert [r["epoch"] for r in rows if r["test_acc"] is not None] == [2, 3, 5]
    assert all(r["test_loss"] is None for r in rows if r["epoch"] in (1, 4))
    assert all(r["train_acc"] is not None and r["images_per_second"] > 0 for r in rows)
    assert [c["test_acc"] for c in run.summary()["cycles"]] == [rows[1]["test_acc"], rows[4]["test_acc"]]
    assert run.summary()["test_acc"] == rows[4]["test_acc"]


@pytest.mark.slow  # a training run of its own
@needs_fashion_mnist
def test_no_grow_restarts_the_lr_at_the_same_depth(growres_env, tmp_path):
    run_dir = tmp_path / "run"
    result = run_growres("train", "--model", "growres_resnet50i", "--no-grow", "--epochs", "2", "--cycles", "1",
                         "--max-train-samples", "100", "--max-eval-samples", "20", "--batch-size", "50",
                         "--output-dir", str(run_dir), env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunFolder(run_dir)
    assert run.config()["grow"] is False and run.growth_records() == []
    rows = run.metrics()
    assert [r["layers"] for r in rows] == [[2, 2, 2], [2, 2, 2]] and [r["step_size"] for r in rows] == [1.0, 1.0]
    # each epoch's last step is the second step of its cycle: the same LR only if the LR restarted at epoch 2
    assert rows[0]["lr"] == rows[1]["lr"] == pytest.approx(0.001 + 0.5 * (0.5 - 0.001))
    assert [d.name for d in run.cycle_dirs()] == ["cycle-1", "cycle-2"]


@pytest.mark.slow  # a training run of its own
@needs_fashion_mnist
def test_ablation_and_real_skip_stochastic_depth_options(growres_env, tmp_path):
    """--no-lr-restarts: one cosine over the run while the model grows at the cycle starts; --stochastic-depth alone:
    Huang et al.'s 0.5 at the last block, kept in the exported model (its eval scales every block by it)."""
    run_dir = tmp_path / "run"
    result = run_growres("train", "--model", "growres_resnet50i", "--no-lr-restarts", "--stochastic-depth",
                         "--epochs", "3", "--cycles", "1,2", "--max-train-samples", "100", "--max-eval-samples", "20",
                         "--batch-size", "50", "--output-dir", str(run_dir), env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunFolder(run_dir)
    assert run.config()["lr_restarts"] is False and run.config()["stochastic_depth"] == 0.5
    assert [g["layers"] for g in run.growth_records()] == [[4, 4, 4], [8, 8, 8]]
    # each epoch's logged LR is that of its last step (1, 3, 5 of 6): one cosine, no restart at steps 2 and 4
    expected = [0.001 + 0.5 * 0.499 * (1 + math.cos(math.pi * step / 6)) for step in (1, 3, 5)]
    assert [r["lr"] for r in run.metrics()] == pytest.approx(expected)
    assert RunFolder(run_dir).summary()["plan"]["restart_lr"] is False
    final = json.loads((run.final_dir / "config.json").read_text())["model_args"]
    assert final["stochastic_depth"] == 0.5 and final["layers"] == [8, 8, 8]
    loaded = timm.create_model(f"local-dir:{run.final_dir}", pretrained=True)
    assert [b.survival_prob for stage in loaded.stages for b in stage][-1] == 0.5


@pytest.mark.slow  # a training run of its own
@needs_fashion_mnist
def test_example_script_is_the_same_code_path(growres_env, tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLE), "--model", "growres_resnet14", "--epochs", "1",
                             "--max-train-samples", "100", "--max-eval-samples", "100", "--output-dir",
                             str(tmp_path / "run")], env=growres_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    bad = subprocess.run([sys.executable, str(EXAMPLE), "--batch-size", "0"], env=growres_env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "positive integer" in bad.stderr and "Traceback" not in bad.stderr


SPEED_FLAGS = ["--mixed-precision", "bf16", "--channels-last", "--grad-accum", "2", "--clip-grad", "1.0",
               "--model-ema", "--log-with", "tensorboard"]


@pytest.mark.slow
@needs_fashion_mnist
def test_speed_flags_ema_and_resume_work_together(growres_env, tmp_path):
    args = ["train", "--epochs", "3", "--max-train-samples", "400", "--max-eval-samples", "100", *SPEED_FLAGS]
    result = run_growres(*args, "--checkpoint-every", "2", "--output-dir", str(tmp_path / "a"), env=growres_env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = RunFolder(tmp_path / "a")
    assert [r["layers"] for r in run.metrics()] == [[2, 2, 2], [4, 4, 4], [8, 8, 8]]
    assert all("ema_test_acc" in r for r in run.metrics())
    assert list((tmp_path / "a" / "growres").iterdir())  # tensorboard event files
    # resume right after the first interpolation (step 2 of 2 steps an epoch), EMA and all
    checkpoint = tmp_path / "a" / "checkpoints" / "step-00000002"
    resumed = run_growres(*args, "--resume", str(checkpoint), "--output-dir", str(tmp_path / "b"), env=growres_env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_resumed_from(resumed, checkpoint, tmp_path / "b", tmp_path / "a", steps_per_epoch=2)
    assert_same_weights(tmp_path / "a" / "final", tmp_path / "b" / "final")
    assert [r["ema_test_acc"] for r in RunFolder(tmp_path / "b").metrics()] == [  # exact, as the weights
        r["ema_test_acc"] for r in run.metrics()]


# Runs `growres train` and reports, after each growth, whether the scheduler's model is a torch.compile wrapper and
# how many graphs dynamo has compiled so far.
COMPILE_REPORT = """
import json, sys
from torch._dynamo.utils import counters
from growres.cli import main
from growres.scheduler import GrowthScheduler

grow, report = GrowthScheduler._grow, {"growths": []}

def grow_and_record(self, *args, **kwargs):
    record = grow(self, *args, **kwargs)
    report["growths"].append(dict(compiled=type(self.model).__name__ == "OptimizedModule",
                                  graphs_before=counters["stats"]["unique_graphs"]))
    return record

GrowthScheduler._grow = grow_and_record
code = main(sys.argv[2:])
report["graphs_at_end"] = counters["stats"]["unique_graphs"]
open(sys.argv[1], "w").write(json.dumps(report))
sys.exit(code)
"""


@pytest.mark.slow
@needs_fashion_mnist
def test_compile_recompiles_after_growth(growres_env, tmp_path):
    report_path = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-c", COMPILE_REPORT, str(report_path), "train", "--epochs", "3",
                             "--max-train-samples", "200", "--max-eval-samples", "100", "--compile", "--output-dir",
                             str(tmp_path / "run")], env=growres_env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["layers"] for r in RunFolder(tmp_path / "run").metrics()] == [[2, 2, 2], [4, 4, 4], [8, 8, 8]]
    report = json.loads(report_path.read_text())
    assert [g["compiled"] for g in report["growths"]] == [True, True]  # the grown model is compiled again
    # each depth compiles its own graphs: the count grows after each growth
    graphs = [g["graphs_before"] for g in report["growths"]] + [report["graphs_at_end"]]
    assert graphs[0] > 0 and graphs[0] < graphs[1] < graphs[2], graphs
