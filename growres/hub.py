"""Publishing on the Hugging Face Hub: model cards and ``growres push-to-hub``.

A push uploads a finished run's final model exactly as :func:`growres.runs.export_model` wrote it
(``model.safetensors`` + timm ``config.json`` with the grown architecture in ``model_args``) and a
``README.md`` model card rendered from ``model_cards/template.md`` with the run's facts. ``--cycles`` also
pushes the model at the end of each cycle to its own branch ``cycle-K``; timm loads a branch named after
``@``: ``timm.create_model("hf-hub:ORG/NAME@cycle-1", pretrained=True)`` (after ``import growres``).
The run folder is only read: files go up straight from it, the card from memory.

:func:`render_family_card` renders the per-family cards committed in ``model_cards/`` (parameter counts
from the timm registry, the paper's Tables 3 and 4); ``python -m growres.hub`` rewrites them.
"""
import argparse
import contextlib
import importlib.resources
import json
import re
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCardData, get_token
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    HTTPError,
    OfflineModeIsEnabled,
    RevisionNotFoundError,
)
from huggingface_hub.repocard import metadata_load
from huggingface_hub.utils import validate_repo_id

from .data import DATASETS
from .errors import GrowresError
from .runs import RunFolder

__all__ = [
    "CITATION",
    "FAMILIES",
    "MODEL_CARDS_DIR",
    "PAPER_RESULTS",
    "push_to_hub",
    "push_to_hub_command",
    "push_to_hub_command_parser",
    "render_family_card",
    "render_model_card",
    "write_family_cards",
]

MODEL_CARDS_DIR = Path(str(importlib.resources.files("growres.model_cards")))  # model_cards/, packaged
MODEL_FILES = ("model.safetensors", "config.json")  # what export_model writes; never pickles
TAGS = ["image-classification", "timm", "growres"]
LICENSE = "apache-2.0"
DEFAULT_BRANCH = "main"
# A Hub that is down fails the first request in milliseconds; a few spaced tries ride out a blip, and a
# dead endpoint is reported in seconds.
CONNECT_ATTEMPTS = 3
# Run settings that describe the pushing machine, not the training recipe (and may hold private paths).
LOCAL_SETTINGS = ("output_dir", "overwrite", "resume", "cache_dir", "checkpoint_every", "log_with",
                  "dataset_name", "num_classes")
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "stl10": "STL-10", "fashion-mnist": "Fashion-MNIST"}

CITATION = """\
@inproceedings{chang2018multilevel,
  title     = {Multi-level Residual Networks from Dynamical Systems View},
  author    = {Chang, Bo and Meng, Lili and Haber, Eldad and Tung, Frederick and Begert, David},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2018},
  url       = {https://arxiv.org/abs/1710.10348}
}"""

_REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_HUB_ID_RE = re.compile(r"[\w.-]+/[\w.-]+")


# -- small formatting helpers --------------------------------------------------------------------------


def _blocks(layers) -> str:
    return "-".join(map(str, layers))


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def _processes(count: int) -> str:
    return f"{count} process" if count == 1 else f"{count} processes"


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = [header, ("---",) * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def _front_matter(**card_data: Any) -> str:
    """Hub metadata through huggingface_hub, so the YAML (model-index included) has the shape the Hub checks."""
    data = ModelCardData(library_name="timm", license=LICENSE, pipeline_tag="image-classification", tags=TAGS,
                         **card_data)
    return data.to_yaml()


def _render(template_name: str, **values: Any) -> str:
    template = string.Template((MODEL_CARDS_DIR / template_name).read_text())
    return template.substitute(values, citation=CITATION)


# -- the run's facts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dataset:
    name: str  # shown in the card
    hub_id: str | None  # None for local data: nothing to link to


def _dataset(config: dict[str, Any], summary: dict[str, Any]) -> _Dataset:
    """The training data as the card names it; local paths are reduced to a folder name, never published."""
    dataset_id = config.get("dataset_id")
    if dataset_id is None:
        name = config.get("dataset") or summary["dataset"]
        spec = DATASETS.get(name)
        return _Dataset(DATASET_NAMES.get(name, name), spec.hub_id if spec else None)
    if _HUB_ID_RE.fullmatch(dataset_id) and not Path(dataset_id).exists():
        return _Dataset(dataset_id, dataset_id)
    return _Dataset(Path(dataset_id).name, None)


def _final_config(run: RunFolder) -> dict[str, Any]:
    """The timm config.json of the final model."""
    return json.loads((run.final_dir / "config.json").read_text())


def _time_saved(run: RunFolder, summary: dict[str, Any], baseline: str | Path | None) -> str:
    """Against the full-depth model: measured when a baseline run is given, else predicted from FLOPs."""
    if baseline is not None:
        base = _baseline_summary(summary, baseline)
        saved = 1 - summary["train_seconds"] / base["train_seconds"]
        return (f"{_percent(saved)}, measured: {_duration(summary['train_seconds'])} against "
                f"{_duration(base['train_seconds'])} for the full-depth `{base['model']}` run")
    saved = summary["theoretical_time_saved"]  # growres.theoretical_time_saved at training time
    return f"{_percent(saved)}, theoretical (FLOPs): each cycle's forward FLOPs times its length; no baseline run given"


def _baseline_summary(summary: dict[str, Any], baseline: str | Path) -> dict[str, Any]:
    base = RunFolder(baseline).summary()
    if not base:
        raise GrowresError(f"--baseline {baseline} has no summary.json: give the folder of a finished full-depth run.")
    differs = [key for key in ("dataset", "epochs", "layers") if base.get(key) != summary.get(key)]
    if differs or base.get("growth"):
        raise GrowresError(
            f"--baseline {baseline} is not a full-depth run of this one: it must train {_blocks(summary['layers'])} "
            f"blocks from the start on {summary['dataset']} for {summary['epochs']} epochs "
            f"(it differs in {', '.join(differs) or 'growth'})."
        )
    return base


def _cycle_rows(run: RunFolder, summary: dict[str, Any], revisions: dict[int, str]) -> list[tuple]:
    """A row per cycle: epochs, blocks, h, parameters and test accuracy at its end, training time so far."""
    metrics = run.metrics()
    rows = []
    for cycle in summary["cycles"]:
        epochs = [m for m in metrics if m["cycle"] == cycle["cycle"]]
        first, last = (epochs[0]["epoch"], epochs[-1]["epoch"]) if epochs else ("–", "–")
        span = f"{first}" if first == last else f"{first}–{last}"
        params = f"{epochs[-1]['num_params']:,}" if epochs else "–"
        revision = f"`{revisions[cycle['cycle']]}`" if cycle["cycle"] in revisions else "–"
        rows.append((cycle["cycle"], span, _blocks(cycle["layers"]), f"{cycle['step_size']:g}", params,
                     _percent(cycle["test_acc"]), _duration(cycle["train_seconds"]), revision))
    return rows


def _hyperparameters(config: dict[str, Any], dataset: _Dataset) -> list[tuple]:
    shown = dict(config, dataset_id=dataset.name if config.get("dataset_id") else None)
    return [(f"`{key}`", f"`{value}`") for key, value in shown.items()
            if key not in LOCAL_SETTINGS and value is not None and value != {}]  # {}: no --model-kwargs


@dataclass(frozen=True)
class _Checkpoint:
    """One model a push uploads: where it lies, the branch it goes to, what the card says about it."""

    directory: Path
    branch: str
    description: str  # completes "Revision `branch` holds ..."
    layers: list[int]
    step_size: float
    test_acc: float


def _checkpoints(run: RunFolder, summary: dict[str, Any], revision: str, cycles: bool) -> list[_Checkpoint]:
    """The final model (to ``revision``), then with ``cycles`` every end-of-cycle model (to ``cycle-K``)."""
    total = len(summary["cycles"])
    final = _Checkpoint(run.final_dir, revision, f"the final model of the run (end of cycle {total} of {total})",
                        summary["layers"], summary["step_size"], summary["test_acc"])
    if not cycles:
        return [final]
    if re.fullmatch(r"cycle-\d+", revision):
        raise GrowresError(f"--revision {revision} is where --cycles puts a cycle's model: choose another branch.")
    exported = {int(d.name.split("-")[1]): d for d in run.cycle_dirs()}
    missing = [c["cycle"] for c in summary["cycles"] if c["cycle"] not in exported]
    if missing or not exported:
        raise GrowresError(f"--cycles: {run.path} lacks the exported models cycles/cycle-K for cycles "
                           f"{missing or 'all'}; push without --cycles.")
    return [final] + [
        _Checkpoint(exported[c["cycle"]], f"cycle-{c['cycle']}", f"the model at the end of cycle {c['cycle']} of "
                    f"{total}", c["layers"], c["step_size"], c["test_acc"])
        for c in summary["cycles"]
    ]


class _Cards:
    """The model cards of one push: the run's facts gathered once, then a card per checkpoint."""

    def __init__(self, run: RunFolder, repo_id: str, checkpoints: list[_Checkpoint], baseline: str | Path | None):
        summary, config = run.summary(), run.config()
        self.repo_id, self.checkpoints = repo_id, checkpoints
        self.dataset = _dataset(config, summary)
        revisions = {int(c.branch.split("-")[1]): c.branch for c in checkpoints[1:]}
        cycle_header = ("cycle", "epochs", "blocks per stage", "h", "parameters", "test accuracy",
                        "training time (cumulative)", "revision")
        hub_id = self.dataset.hub_id
        self.values = dict(
            repo_id=repo_id, model=summary["model"], dataset=self.dataset.name, num_classes=summary["num_classes"],
            dataset_link=f"[{hub_id}](https://huggingface.co/datasets/{hub_id})" if hub_id
            else f"{self.dataset.name} (local data)",
            input_size="×".join(map(str, _final_config(run)["pretrained_cfg"]["input_size"])),
            final_blocks=_blocks(summary["layers"]), final_h=f"{summary['step_size']:g}",
            num_params=f"{summary['num_params']:,}",
            growth=" → ".join(f"{_blocks(c['layers'])} (h={c['step_size']:g})" for c in summary["cycles"]),
            cycle_table=_table(cycle_header, _cycle_rows(run, summary, revisions)),
            final_acc=_percent(summary["test_acc"]), train_time=_duration(summary["train_seconds"]),
            epochs=summary["epochs"], processes=_processes(summary.get("world_size", 1)),
            time_saved=_time_saved(run, summary, baseline),
            hyperparameters=_table(("setting", "value"), _hyperparameters(config, self.dataset)),
        )

    def front_matter(self, checkpoint: _Checkpoint) -> str:
        result = EvalResult(
            task_type="image-classification", dataset_type=self.dataset.hub_id or self.dataset.name,
            dataset_name=self.dataset.name, dataset_split="test", metric_type="accuracy",
            metric_name="Top-1 accuracy", metric_value=checkpoint.test_acc,
        )
        datasets = [self.dataset.hub_id] if self.dataset.hub_id else None  # local data has no Hub id to name
        return _front_matter(datasets=datasets, model_name=self.repo_id, eval_results=[result])

    def card(self, checkpoint: _Checkpoint) -> str:
        load_id = self.repo_id if checkpoint.branch == DEFAULT_BRANCH else f"{self.repo_id}@{checkpoint.branch}"
        other = next((c.branch for c in self.checkpoints if c.branch != checkpoint.branch), "REVISION")
        return _render(
            "template.md", **self.values, front_matter=self.front_matter(checkpoint), branch=checkpoint.branch,
            checkpoint=checkpoint.description, blocks=_blocks(checkpoint.layers), h=f"{checkpoint.step_size:g}",
            test_acc=_percent(checkpoint.test_acc), load_id=load_id, other_revision=other,
        )


def render_model_card(run_dir: str | Path, repo_id: str, *, revision: str | None = None, cycle: int | None = None,
                      cycles: bool = False, baseline: str | Path | None = None) -> str:
    """The README.md a push uploads: for the final model, or with ``cycle=K`` for branch ``cycle-K``.

    ``cycles`` says whether the end-of-cycle models are pushed too (the card then points to their branches).
    """
    run = RunFolder(run_dir).require()
    checkpoints = _checkpoints(run, run.summary(), revision or DEFAULT_BRANCH, cycles or cycle is not None)
    branch = f"cycle-{cycle}" if cycle is not None else revision or DEFAULT_BRANCH
    checkpoint = next((c for c in checkpoints if c.branch == branch), None)
    if checkpoint is None:
        raise GrowresError(f"{run.path} has no cycle {cycle}: it has {len(checkpoints) - 1} cycles.")
    return _Cards(run, repo_id, checkpoints, baseline).card(checkpoint)


# -- the push ------------------------------------------------------------------------------------------------


def _check_repo_id(repo_id: str) -> None:
    try:
        valid = bool(_REPO_ID_RE.fullmatch(repo_id)) and validate_repo_id(repo_id) is None
    except HFValidationError:
        valid = False
    if not valid:
        raise GrowresError(f"--repo-id must be ORG/NAME (letters, digits, '-', '_', '.'), got {repo_id!r}.")


def _resolve_token(token: str | None) -> str:
    token = token or get_token()
    if not token:
        raise GrowresError("No Hugging Face token: pass --token, set HF_TOKEN, or log in with `hf auth login`.")
    return token


@contextlib.contextmanager
def _hub_errors(endpoint: str, repo_id: str, token: str) -> Iterator[None]:
    """Client and server failures as one GrowresError sentence, with the token scrubbed from it."""
    try:
        yield
    except OfflineModeIsEnabled:
        raise GrowresError("HF_HUB_OFFLINE is set: unset it to push to the Hub.") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 401:
            message = (f"The Hub at {endpoint} refused the token (401): "
                       "pass a valid write token with --token or HF_TOKEN.")
        elif status == 403:
            message = f"The token may not write to {repo_id} (403): use a token with write access to it."
        else:
            message = f"The Hub at {endpoint} refused the push ({status}): {str(err).splitlines()[0]}"
        raise GrowresError(message.replace(token, "***")) from None
    except HTTPError as err:  # no answer at all: refused connection, timeout, DNS
        message = f"Cannot reach the Hub at {endpoint} ({err}): check the network or HF_ENDPOINT, then push again."
        raise GrowresError(message.replace(token, "***")) from None


def _create_repo(api: HfApi, repo_id: str, private: bool) -> None:
    """``create_repo(exist_ok=True)``, the first request: retried a few times if the Hub does not answer."""
    for attempt in range(CONNECT_ATTEMPTS):
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            return
        except HTTPError as err:
            if isinstance(err, HfHubHTTPError) or attempt == CONNECT_ATTEMPTS - 1:
                raise
            time.sleep(2 ** attempt)


def _is_growres_branch(api: HfApi, repo_id: str, branch: str, files: set[str]) -> bool:
    """Whether a branch holds nothing but a growres push (or nothing at all)."""
    if not files - {".gitattributes"}:
        return True
    if "README.md" not in files:
        return False
    metadata = metadata_load(api.hf_hub_download(repo_id, "README.md", revision=branch)) or {}
    return "growres" in (metadata.get("tags") or [])


def _refuse_foreign_content(api: HfApi, repo_id: str, branches: list[str]) -> None:
    """Refuse to push over a repo someone filled with something else; new branches start from main."""
    for branch in dict.fromkeys([DEFAULT_BRANCH, *branches]):
        try:
            files = set(api.list_repo_files(repo_id, revision=branch))
        except RevisionNotFoundError:
            continue  # a branch this push creates
        if not _is_growres_branch(api, repo_id, branch, files):
            example = sorted(files - {".gitattributes"})[0]
            raise GrowresError(f"{repo_id} already holds content growres did not push ({example} on {branch}): "
                               "choose another --repo-id rather than overwrite it.")


def _upload(api: HfApi, repo_id: str, checkpoint: _Checkpoint, card: str, model: str) -> str:
    """One commit: the exported files, read in place from the run folder, and the card from memory."""
    operations = [CommitOperationAdd(name, str(checkpoint.directory / name)) for name in MODEL_FILES]
    operations.append(CommitOperationAdd("README.md", card.encode()))
    info = api.create_commit(repo_id, operations, revision=checkpoint.branch,
                             commit_message=f"growres: {model}, {checkpoint.description}")
    return info.commit_url


def push_to_hub(run_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                token: str | None = None, cycles: bool = False, baseline: str | Path | None = None) -> str:
    """Push a finished run's final model and its model card to ``repo_id``; returns the commit URL.

    ``revision`` is the branch (created from main if needed), ``cycles`` also pushes each end-of-cycle model
    to branch ``cycle-K``, ``baseline`` is a full-depth run folder for a measured time saving.
    Everything local is checked and rendered before the first request; the run folder is never written.
    """
    _check_repo_id(repo_id)
    run = RunFolder(run_dir).require()
    summary = run.summary()
    checkpoints = _checkpoints(run, summary, revision or DEFAULT_BRANCH, cycles)
    writer = _Cards(run, repo_id, checkpoints, baseline)
    cards = [writer.card(c) for c in checkpoints]
    token = _resolve_token(token)
    api = HfApi(token=token)
    with _hub_errors(api.endpoint, repo_id, token):
        _create_repo(api, repo_id, private)
        _refuse_foreign_content(api, repo_id, [c.branch for c in checkpoints])
        final, *history = zip(checkpoints, cards)
        if final[0].branch != DEFAULT_BRANCH:
            api.create_branch(repo_id, branch=final[0].branch, exist_ok=True)
        url = _upload(api, repo_id, *final, summary["model"])
        for checkpoint, card in history:
            api.create_branch(repo_id, branch=checkpoint.branch, revision=final[0].branch, exist_ok=True)
            _upload(api, repo_id, checkpoint, card, summary["model"])
    return url


def push_to_hub_command_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "push-to-hub", help="Push a run's final model (safetensors + timm config) and a model card to the Hub.",
        description="Push RUN_DIR/final to the Hugging Face Hub as a timm model with a model card; "
                    "load it with `import growres; timm.create_model('hf-hub:ORG/NAME', pretrained=True)`.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (growres train --output-dir)")
    parser.add_argument("--repo-id", required=True, help="the model repo, ORG/NAME (created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", help="branch to push to (default main; created if missing)")
    parser.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or `hf auth login`)")
    parser.add_argument("--cycles", action="store_true",
                        help="also push each end-of-cycle model to branch cycle-K (load with hf-hub:ORG/NAME@cycle-K)")
    parser.add_argument("--baseline", metavar="RUN_DIR",
                        help="a full-depth run of the last-cycle model, for a measured time saving in the card")
    parser.set_defaults(func=push_to_hub_command)


def push_to_hub_command(args: argparse.Namespace) -> None:
    url = push_to_hub(args.run_dir, args.repo_id, private=args.private, revision=args.revision, token=args.token,
                      cycles=args.cycles, baseline=args.baseline)
    print(f"pushed {args.run_dir} to {args.repo_id}: {url}")


# -- family cards -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Family:
    title: str
    pattern: str  # timm.list_models pattern of the family's registered models
    kind: str  # the architecture, plural, as the paper names it
    paper_table: int


FAMILIES = {
    "growres-resnet": _Family("growres ResNets", "growres_resnet*", "ResNets", 3),
    "growres-wide-resnet": _Family("growres Wide ResNets", "growres_wrn*", "Wide ResNets (WResNets in the paper)", 4),
}

# The paper's Tables 3 and 4, as printed: test error (%) and training time (minutes, one GTX 1080)
# on CIFAR-10, CIFAR-100 and STL-10, in the tables' row order.
PAPER_DATASETS = ("CIFAR-10", "CIFAR-100", "STL-10")
PAPER_RESULTS: dict[str, tuple[str, tuple[tuple[str, int], ...]]] = {
    "growres_resnet14": ("ResNet-14", (("9.75", 38), ("33.34", 38), ("27.78", 33))),
    "growres_resnet50": ("ResNet-50", (("7.58", 114), ("28.64", 115), ("25.95", 114))),
    "growres_resnet50i": ("ResNet-50-i", (("7.10", 67), ("28.71", 68), ("25.98", 68))),
    "growres_resnet32": ("ResNet-32", (("7.74", 76), ("29.96", 74), ("26.02", 71))),
    "growres_resnet122": ("ResNet-122", (("6.47", 266), ("26.74", 266), ("25.16", 266))),
    "growres_resnet122i": ("ResNet-122-i", (("6.56", 154), ("26.81", 154), ("24.36", 162))),
    "growres_wrn14": ("WResNet-14", (("7.38", 51), ("27.92", 51), ("24.58", 63))),
    "growres_wrn50": ("WResNet-50", (("5.87", 174), ("24.49", 173), ("23.82", 222))),
    "growres_wrn50i": ("WResNet-50-i", (("5.95", 101), ("24.92", 101), ("22.82", 131))),
    "growres_wrn32": ("WResNet-32", (("6.29", 111), ("25.32", 111), ("23.51", 136))),
    "growres_wrn122": ("WResNet-122", (("5.38", 406), ("23.11", 406), ("22.00", 516))),
    "growres_wrn122i": ("WResNet-122-i", (("5.46", 239), ("23.04", 237), ("22.65", 307))),
}
# Classes of each dataset of Table 5; every one has 3-channel images, and pooling is global, so image size
# does not change a count.
PARAM_DATASETS = (("CIFAR-10", 10), ("CIFAR-100", 100), ("STL-10", 10))


def _family_models(family: _Family) -> list[str]:
    """The family's registered models, in the paper's row order (any others after them)."""
    order = list(PAPER_RESULTS)
    return sorted(timm.list_models(family.pattern), key=lambda n: order.index(n) if n in order else len(order))


def _params(name: str, num_classes: int, **model_args: Any) -> int:
    model = timm.create_model(name, num_classes=num_classes, **model_args)
    return sum(p.numel() for p in model.parameters())


def _architecture_row(name: str) -> tuple:
    """blocks, h and parameter counts of a model; a multi-level model shows where it starts and ends."""
    model = timm.create_model(name)
    plan = model.growth_plan
    grown = dict(layers=plan.final_layers, step_size=plan.final_step_size, interpolations=0)
    counts = []
    for _, classes in PARAM_DATASETS:
        start = f"{_params(name, classes):,}"
        counts.append(f"{start} → {_params(name, classes, **grown):,}" if plan.interpolations else start)
    if plan.interpolations:
        return (f"`{name}`", f"{_blocks(model.layers)} → {_blocks(plan.final_layers)}",
                f"{model.step_size:g} → {plan.final_step_size:g}", *counts)
    return (f"`{name}`", _blocks(model.layers), f"{model.step_size:g}", *counts)


def _last_cycle_model(name: str, models: list[str]) -> str | None:
    """The fixed-depth model a multi-level model ends as (its paper baseline), if it is registered."""
    plan = timm.create_model(name).growth_plan
    if not plan.interpolations:
        return None
    fixed = (m for m in models if not timm.create_model(m).growth_plan.interpolations)
    return next((m for m in fixed if timm.create_model(m).layers == plan.final_layers), None)


def _paper_tables(models: list[str]) -> tuple[str, str]:
    """The paper's results for these models, and the time saving its own times give each multi-level model."""
    rows, saved = [], []
    for name in (m for m in models if m in PAPER_RESULTS):
        label, cells = PAPER_RESULTS[name]
        rows.append((label, f"`{name}`", *(f"{error}% / {minutes} min" for error, minutes in cells)))
        baseline = _last_cycle_model(name, models)
        if baseline in PAPER_RESULTS:
            base_label, base_cells = PAPER_RESULTS[baseline]
            saved.append((f"{label} vs {base_label}",
                          *(f"{1 - t / b:.0%}" for (_, t), (_, b) in zip(cells, base_cells))))
    header = ("model (paper)", "timm name", *(f"{d} error / time" for d in PAPER_DATASETS))
    return _table(header, rows), _table(("multi-level vs last-cycle model", *PAPER_DATASETS), saved)


def render_family_card(family: str) -> str:
    """The card of a registered model family (``model_cards/FAMILY.md``): architecture, parameter counts
    computed from the timm registry, and the paper's reported results."""
    if family not in FAMILIES:
        raise GrowresError(f"Unknown model family {family!r}: choose one of {', '.join(FAMILIES)}.")
    spec = FAMILIES[family]
    models = _family_models(spec)
    paper, saved = _paper_tables(models)
    example = next(m for m in models if timm.create_model(m).growth_plan.interpolations)
    return _render(
        "family-template.md", front_matter=_front_matter(), title=spec.title, kind=spec.kind,
        widths=_blocks(timm.create_model(models[0]).widths), models=", ".join(f"`{m}`" for m in models),
        architecture_table=_table(("model", "blocks per stage", "h",
                                   *(f"parameters, {d}" for d, _ in PARAM_DATASETS)),
                                  [_architecture_row(m) for m in models]),
        paper_table_number=spec.paper_table, paper_table=paper, saved_table=saved, example=example,
    )


def write_family_cards(directory: Path = MODEL_CARDS_DIR) -> list[Path]:
    """(Re)write ``FAMILY.md`` for every family; the committed files must equal these."""
    paths = []
    for family in FAMILIES:
        path = directory / f"{family}.md"
        path.write_text(render_family_card(family))
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_family_cards():
        print(f"wrote {written}")
