"""``growres push-to-hub`` and the model cards, against the real HTTP fake Hub of tests/hub_server.py.

huggingface_hub reads HF_ENDPOINT when it is imported, so every push and every Hub load runs in a fresh
interpreter. The pushes run once, side by side, and the tests share them (module fixtures).
"""
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest
import timm
import yaml
from conftest import run_growres

import growres
import growres.hub
from growres.data import DATASETS
from growres.hub import FAMILIES, MODEL_CARDS_DIR, render_family_card, render_model_card
from growres.runs import RunFolder

REPO = "growres-test/tiny"  # the round trip: final model on main, cycles on cycle-K
BRANCH_REPO = "growres-test/tiny-dev"  # --revision dev --private --baseline
FOREIGN_REPO = "growres-test/someone-elses"  # created with an unrelated file first
REFUSED_REPO = "growres-test/refused"  # every refused push names it; none may create it
ENV_TOKEN_REPO = "growres-test/tiny-env-token"  # pushed with the token in HF_TOKEN
LOGIN_REPO = "growres-test/tiny-login"  # pushed with the token of a stored login
REQUIRED_TAGS = {"image-classification", "timm", "growres"}
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".pkl", ".ckpt")
OWN_FILES = {".gitattributes", "README.md", "config.json", "model.safetensors"}


# -- helpers -------------------------------------------------------------------------------------------


def _fingerprint(folder: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of every file, and mtime of every folder (a new or removed file changes it)."""
    def entry(path: Path) -> tuple[str, int]:
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        return digest, path.stat().st_mtime_ns
    return {str(p.relative_to(folder)): entry(p) for p in [folder, *sorted(folder.rglob("*"))]}


def _front_matter(readme: str) -> dict:
    assert readme.startswith("---\n"), readme[:80]
    return yaml.safe_load(readme.split("---\n")[1])


def _stored(hub_server, repo_id: str, branch: str) -> dict:
    """path -> StoredFile of a branch, read from the in-process fake Hub."""
    return hub_server.hub.repos[repo_id].resolve(branch).files


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _timed_growres(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    result = run_growres(*args, env=env, timeout=120)
    return result, time.perf_counter() - start


# -- fixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub_env(hub_server, growres_env) -> dict[str, str]:
    env = {**growres_env, **hub_server.env()}
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # growres_env works offline; a push cannot
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def run_before(tiny_run) -> dict[str, tuple[str, int]]:
    return _fingerprint(tiny_run)


@pytest.fixture(scope="module")
def summary(tiny_run) -> dict:
    return RunFolder(tiny_run).summary()


@pytest.fixture(scope="module")
def baseline_run(tiny_run, summary, tmp_path_factory) -> Path:
    """A full-depth run of the tiny run's final model, as its summary.json would show it: slower by 2.5x."""
    folder = tmp_path_factory.mktemp("baseline")
    base = dict(summary, model="growres_resnet50", growth=[], train_seconds=2.5 * summary["train_seconds"],
                plan=dict(summary["plan"], grow=False))
    (folder / "summary.json").write_text(json.dumps(base))
    return folder


LOAD_SCRIPT = """
import json, sys
import growres, timm, torch
repo, run, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
sources = {"main": (repo, run + "/final")}
sources.update({f"cycle-{k}": (f"{repo}@cycle-{k}", f"{run}/cycles/cycle-{k}") for k in range(1, cycles + 1)})
report = {}
for name, (hub_id, local) in sources.items():
    hub = timm.create_model("hf-hub:" + hub_id, pretrained=True).eval()
    ref = timm.create_model("local-dir:" + local, pretrained=True).eval()
    with torch.no_grad():
        report[name] = dict(layers=list(hub.layers), step_size=hub.step_size, equal=torch.equal(hub(x), ref(x)))
first = timm.create_model(json.load(open(run + "/summary.json"))["model"])
report["first_cycle"] = dict(layers=list(first.layers), step_size=first.step_size)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def loaded(pushed, tiny_run, summary, hub_env) -> dict:
    """What timm loads from the Hub (main and every cycle-K) next to the same models loaded from the run folder."""
    args = [REPO, str(tiny_run), str(len(summary["cycles"]))]
    result = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, *args], env=hub_env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def foreign_repo(hub_env, hub_server) -> str:
    script = ("import sys; from huggingface_hub import HfApi; api = HfApi(token=sys.argv[2]); "
              "api.create_repo(sys.argv[1]); "
              "api.upload_file(path_or_fileobj=b'not a model', path_in_repo='notes.txt', repo_id=sys.argv[1])")
    subprocess.run([sys.executable, "-c", script, FOREIGN_REPO, hub_server.token], env=hub_env, check=True,
                   timeout=120)
    return FOREIGN_REPO


class Push(NamedTuple):
    """One ``growres push-to-hub`` run: its arguments after RUN_DIR, the run folder, environment changes, a token
    stored by a login in its HF_HOME, and for a push that must be refused what its one error line says.
    ``{token}``, ``{run}``, ``{unfinished}``, ``{baseline}``, ``{port}`` (a closed port) and ``{empty_home}`` are filled
    in; no push may print the token it was given (see :func:`own_token`)."""

    args: list[str]
    says: str | None = None  # None: the push succeeds
    run: str = "{run}"
    env: dict[str, str] = {}
    login: str | None = None  # a token saved in the push's own HF_HOME, as `hf auth login` does


def own_token(push: Push, token: str) -> str | None:
    """The token a push authenticates with: --token, else HF_TOKEN, else its stored login (as huggingface_hub picks)."""
    if "--token" in push.args:
        return push.args[push.args.index("--token") + 1].format(token=token)
    return push.env.get("HF_TOKEN", push.login or "").format(token=token) or None


PUSHES = {
    "round trip": Push(["--repo-id", REPO, "--cycles", "--token", "{token}"]),
    "branch": Push(["--repo-id", BRANCH_REPO, "--revision", "dev", "--private", "--baseline", "{baseline}",
                    "--token", "{token}"]),
    "token from HF_TOKEN": Push(["--repo-id", ENV_TOKEN_REPO], env={"HF_TOKEN": "{token}"}),
    "token from a stored login": Push(["--repo-id", LOGIN_REPO], login="{token}"),
    "missing token": Push(["--repo-id", REFUSED_REPO], "No Hugging Face token", env={"HF_HOME": "{empty_home}"}),
    "repo id without slash": Push(["--repo-id", "noslash", "--token", "{token}"], "--repo-id must be ORG/NAME"),
    "repo id with two slashes": Push(["--repo-id", "a/b/c", "--token", "{token}"], "--repo-id must be ORG/NAME"),
    "repo id with a space": Push(["--repo-id", "bad id/x", "--token", "{token}"], "--repo-id must be ORG/NAME"),
    "wrong token": Push(["--repo-id", REFUSED_REPO, "--token", "hf_wrong_token"], "refused the token"),
    "wrong token from HF_TOKEN": Push(["--repo-id", REFUSED_REPO], "refused the token",
                                      env={"HF_TOKEN": "hf_wrong_env_token"}),
    "wrong token of a stored login": Push(["--repo-id", REFUSED_REPO], "refused the token",
                                          login="hf_wrong_login_token"),
    "server down": Push(["--repo-id", REFUSED_REPO, "--token", "{token}"], "Cannot reach the Hub",
                        env={"HF_ENDPOINT": "http://127.0.0.1:{port}"}),
    "server down, token from HF_TOKEN": Push(["--repo-id", REFUSED_REPO], "Cannot reach the Hub",
                                             env={"HF_ENDPOINT": "http://127.0.0.1:{port}", "HF_TOKEN": "{token}"}),
    "no final model": Push(["--repo-id", REFUSED_REPO, "--token", "{token}"], "has no final model", run="{unfinished}"),
    "repo with other content": Push(["--repo-id", FOREIGN_REPO, "--token", "{token}"], "did not push"),
    "baseline that grew": Push(["--repo-id", REFUSED_REPO, "--token", "{token}", "--baseline", "{run}"],
                               "not a full-depth run"),
}
FAILURES = [name for name, push in PUSHES.items() if push.says]


@pytest.fixture(scope="module")
def pushes(tiny_run, hub_env, hub_server, foreign_repo, baseline_run, run_before, tmp_path_factory) -> dict:
    """Every PUSHES case, run side by side: name -> (result, seconds). None may touch the run folder."""
    unfinished = tmp_path_factory.mktemp("unfinished")
    shutil.copy(tiny_run / "config.yaml", unfinished / "config.yaml")
    values = dict(token=hub_server.token, port=_closed_port(), run=str(tiny_run), unfinished=str(unfinished),
                  baseline=str(baseline_run), empty_home=str(tmp_path_factory.mktemp("empty-hf-home")))

    def launch(push: Push):
        args = ["push-to-hub", push.run.format(**values), *(a.format(**values) for a in push.args)]
        env = dict(hub_env, **{k: v.format(**values) for k, v in push.env.items()})
        if push.login:  # what `hf auth login` leaves: the token in HF_HOME/token
            env["HF_HOME"] = str(tmp_path_factory.mktemp("login-hf-home"))
            Path(env["HF_HOME"], "token").write_text(push.login.format(**values))
        return _timed_growres(args, env)

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(launch, push) for name, push in PUSHES.items()}
        results = {name: future.result() for name, future in futures.items()}
    assert _fingerprint(tiny_run) == run_before
    assert REFUSED_REPO not in hub_server.hub.repos
    return results


def _succeeded(pushes: dict, name: str) -> subprocess.CompletedProcess:
    result = pushes[name][0]
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def pushed(pushes) -> subprocess.CompletedProcess:
    return _succeeded(pushes, "round trip")


@pytest.fixture(scope="module")
def branch_push(pushes) -> subprocess.CompletedProcess:
    return _succeeded(pushes, "branch")


# -- the round trip -------------------------------------------------------------------------------------------


def test_push_prints_the_commit_url(pushed, hub_server):
    head = hub_server.hub.repos[REPO].branches["main"]
    assert f"{hub_server.endpoint}/{REPO}/commit/{head}" in pushed.stdout


@pytest.mark.parametrize("case", list(PUSHES))
def test_no_push_prints_its_token(pushes, hub_server, case):
    result, _ = pushes[case]
    token = own_token(PUSHES[case], hub_server.token)
    if case == "missing token":
        assert token is None
        return
    assert token and token not in result.stdout + result.stderr


@pytest.mark.parametrize("case", ["token from HF_TOKEN", "token from a stored login"])
def test_pushes_with_the_token_from_the_environment_or_a_login(pushes, hub_server, case):
    result = _succeeded(pushes, case)
    repo_id = PUSHES[case].args[1]
    head = hub_server.hub.repos[repo_id].branches["main"]
    assert f"{hub_server.endpoint}/{repo_id}/commit/{head}" in result.stdout
    assert set(_stored(hub_server, repo_id, "main")) == OWN_FILES


def test_hub_model_equals_the_run_folder_model(loaded, summary):
    assert loaded["main"]["equal"]
    assert loaded["main"]["layers"] == summary["layers"]
    assert loaded["main"]["step_size"] == summary["step_size"]


def test_cycle_branches_load_the_growth_history(loaded, summary):
    for cycle in summary["cycles"]:
        model = loaded[f"cycle-{cycle['cycle']}"]
        assert model["equal"]
        assert (model["layers"], model["step_size"]) == (cycle["layers"], cycle["step_size"])
    # cycle 1 is the registered model's own first-cycle architecture (2-2-2 blocks, h=1 for growres_resnet50i)
    first = loaded["first_cycle"]
    assert (loaded["cycle-1"]["layers"], loaded["cycle-1"]["step_size"]) == (first["layers"], first["step_size"])


@pytest.mark.parametrize("branch,folder", [("main", "final"), ("cycle-1", "cycles/cycle-1"),
                                           ("cycle-3", "cycles/cycle-3")])
def test_uploaded_files_are_the_exported_ones(pushed, hub_server, tiny_run, branch, folder):
    files = _stored(hub_server, REPO, branch)
    assert set(files) == OWN_FILES
    assert not [path for path in files if path.endswith(PICKLE_SUFFIXES)]
    for name in ("model.safetensors", "config.json"):
        assert files[name].content == (tiny_run / folder / name).read_bytes()
    assert files["model.safetensors"].lfs


def test_every_cycle_has_a_branch(pushed, hub_server, summary):
    expected = {"main", *(f"cycle-{c['cycle']}" for c in summary["cycles"])}
    assert set(hub_server.hub.repos[REPO].branches) == expected


@pytest.mark.parametrize("branch", ["main", "cycle-1"])
def test_readme_front_matter_is_valid_hub_metadata(pushed, hub_server, summary, branch):
    meta = _front_matter(_stored(hub_server, REPO, branch)["README.md"].content.decode())
    assert meta["library_name"] == "timm"
    assert set(meta["tags"]) >= REQUIRED_TAGS
    assert (meta["license"], meta["pipeline_tag"]) == ("apache-2.0", "image-classification")
    assert meta["datasets"] == [DATASETS[summary["dataset"]].hub_id]
    result = meta["model-index"][0]["results"][0]
    accuracy = summary["test_acc"] if branch == "main" else summary["cycles"][0]["test_acc"]
    assert result["task"]["type"] == "image-classification"
    assert result["dataset"]["type"] == DATASETS[summary["dataset"]].hub_id
    assert result["metrics"][0] == {"type": "accuracy", "value": accuracy, "name": "Top-1 accuracy"}


def test_readme_tells_how_to_load_and_cite(pushed, hub_server, tiny_run, summary):
    readme = _stored(hub_server, REPO, "main")["README.md"].content.decode()
    model = timm.create_model(summary["model"], num_classes=summary["num_classes"])
    saved = growres.theoretical_time_saved(growres.GrowthPlan(**summary["plan"]), model)
    assert f'timm.create_model("hf-hub:{REPO}", pretrained=True)' in readme
    assert f"hf-hub:{REPO}@cycle-1" in readme
    assert "import growres" in readme
    assert f"{100 * saved:.2f}%, theoretical (FLOPs)" in readme
    assert "@inproceedings{chang2018multilevel" in readme
    for cycle in summary["cycles"]:
        assert f"| {'-'.join(map(str, cycle['layers']))} | {cycle['step_size']:g} |" in readme
    assert str(tiny_run) not in readme  # local paths are not published


# -- other branches, privacy and a measured baseline ------------------------------------------------------


def test_revision_branch_private_repo_and_measured_time_saved(branch_push, hub_server, summary, baseline_run):
    repo = hub_server.hub.repos[BRANCH_REPO]
    assert repo.private
    assert set(_stored(hub_server, BRANCH_REPO, "main")) == {".gitattributes"}
    readme = _stored(hub_server, BRANCH_REPO, "dev")["README.md"].content.decode()
    saved = 1 - summary["train_seconds"] / RunFolder(baseline_run).summary()["train_seconds"]
    assert f"{100 * saved:.2f}%, measured" in readme
    assert f'timm.create_model("hf-hub:{BRANCH_REPO}@dev", pretrained=True)' in readme


def test_pushing_again_updates_our_own_repo(pushed, tiny_run, hub_env, hub_server, run_before):
    result = run_growres("push-to-hub", str(tiny_run), "--repo-id", REPO, "--token", hub_server.token, env=hub_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _fingerprint(tiny_run) == run_before


# -- refused pushes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", FAILURES)
def test_refused_push_says_why_in_one_line(pushes, hub_server, case):
    result, _ = pushes[case]
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("growres: error: "), result.stderr
    assert PUSHES[case].says in lines[0]


def test_a_dead_server_is_given_up_on_after_bounded_retries(pushes):
    """growres retries the first request CONNECT_ATTEMPTS times, sleeping 1 s, 2 s, ...: against a closed port a push
    takes at most those sleeps longer than a push refused before any request (both ran side by side), not the
    client's minutes of backoff. (A refused connection fails at once; 10 s more absorb the scheduling of the
    concurrent pushes on a busy machine.)"""
    offline = max(pushes[case][1] for case in ("missing token", "repo id without slash", "no final model"))
    backoff = sum(2 ** attempt for attempt in range(growres.hub.CONNECT_ATTEMPTS - 1))
    for case in ("server down", "server down, token from HF_TOKEN"):
        assert pushes[case][1] < offline + backoff + 10, (case, pushes[case][1], offline)


def test_refused_pushes_leave_the_other_repo_alone(pushes, hub_server):
    assert set(_stored(hub_server, FOREIGN_REPO, "main")) == {".gitattributes", "notes.txt"}


# -- cards rendered in-process ------------------------------------------------------------------------------


@pytest.mark.parametrize("change", [dict(epochs=99), dict(layers=[4, 4, 4]), dict(dataset="cifar10"),
                                    dict(growth=[{"cycle": 2}])])
def test_baseline_must_be_the_full_depth_run(tiny_run, baseline_run, tmp_path, change):
    summary = dict(RunFolder(baseline_run).summary(), **change)
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(growres.GrowresError, match="not a full-depth run"):
        render_model_card(tiny_run, REPO, baseline=tmp_path)


def test_cycle_card_describes_its_own_checkpoint(tiny_run, summary):
    cycle = summary["cycles"][0]
    card = render_model_card(tiny_run, REPO, cycle=1)
    assert f"Revision `cycle-1` holds the model at the end of cycle 1 of {len(summary['cycles'])}" in card
    assert _front_matter(card)["model-index"][0]["results"][0]["metrics"][0]["value"] == cycle["test_acc"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_cards_are_in_sync_with_the_registry(family):
    committed = (MODEL_CARDS_DIR / f"{family}.md").read_text()
    assert committed == render_family_card(family), "model_cards/ is stale: run `python -m growres.hub`"


def test_family_cards_cover_every_registered_model():
    covered = [name for spec in FAMILIES.values() for name in timm.list_models(spec.pattern)]
    assert sorted(covered) == sorted(timm.list_models("growres_*"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_cards_show_the_registry_parameter_counts(family):
    card = (MODEL_CARDS_DIR / f"{family}.md").read_text()
    for name in timm.list_models(FAMILIES[family].pattern):
        for num_classes in (10, 100):
            params = sum(p.numel() for p in timm.create_model(name, num_classes=num_classes).parameters())
            assert f"{params:,}" in card
