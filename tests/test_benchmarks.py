"""The evidence benchmark's bookkeeping (benchmarks/plateau.py): the queue, resuming, the paired interval and the
verdict, and its GPU check's code path on a CPU (slow)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_fashion_mnist

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import plateau  # noqa: E402  (a script of benchmarks/, not a package)

MACHINE = plateau.machine.describe()  # what a run records of the machine it ran on (the report names them)


def record(method: str, seed: int, test_acc: float, seconds: float, epochs: int = 20, precision: str = "bf16",
           load: float = 2.0):
    return {"method": method, "seed": seed, "epochs": epochs, "mixed_precision": precision, "test_acc": test_acc,
            "train_seconds": seconds, "curve": [(epochs, seconds, test_acc)], "load_average": [load, load],
            "machine": MACHINE | {"threads": 2}, "date": f"2026-12-01T{epochs:02d}:{seed:02d}:00"}


def results(accuracies: dict[str, list[float]], seconds: dict[str, float] | None = None) -> dict:
    runs = {}
    for method, values in accuracies.items():
        for seed, acc in enumerate(values):
            r = record(method, seed, acc, (seconds or {}).get(method, 100.0))
            runs[plateau.Job(method, seed, 20, "bf16").key] = r
    return {"size": {}, "runs": runs}


def test_queue_runs_the_pilot_first_then_the_verdicts_pair_then_every_method_per_seed_then_the_fp32_check():
    jobs = plateau.queue(plateau.Size(mixed_precision="bf16"), seeds=(0, 1, 2))
    keys = [job.key for job in jobs]
    assert keys[:4] == ["last/20ep/bf16/seed0", "last/40ep/bf16/seed0", "last/20ep/bf16/seed1", "last/40ep/bf16/seed1"]
    assert keys[4:8] == ["multilevel/20ep/bf16/seed0", "multilevel/20ep/bf16/seed1", "multilevel/20ep/bf16/seed2",
                         "last/20ep/bf16/seed2"]  # the pair of every seed before the other methods of any
    assert keys[-3:] == ["last/20ep/no/seed0", "last/20ep/no/seed1", "last/20ep/no/seed2"]
    assert len(keys) == len(set(keys)) == 4 + 3 * 4 - 2 + 3  # the pilot's runs at the size are the comparison's
    for seed in (0, 1, 2):  # each seed has every method
        assert {job.method for job in jobs if job.seed == seed and job.epochs == 20 and job.mixed_precision == "bf16"} \
            == set(plateau.METHODS)
    gpu = plateau.queue(plateau.GPU, seeds=(0,))
    assert [job.key for job in gpu] == ["last/16ep/bf16/seed0", "multilevel/16ep/bf16/seed0", "first/16ep/bf16/seed0"]


def test_a_seed_keeps_the_precision_it_started_with_where_it_can_and_a_new_one_takes_the_machines(monkeypatch):
    """Runs spread over machines: seeds begun in bf16 finish in bf16 on a CPU with AVX512-BF16 (their pairs stay
    alike); on an AVX2-only CPU, where bf16 runs at 0.05-0.26x, what is left of them runs in fp32, as a new seed
    does, and the fp32 check of a bf16 seed is queued once (a new seed's is its own run there)."""
    runs = {job.key: record(job.method, job.seed, 0.9, 1.0, job.epochs, job.mixed_precision)
            for job in plateau.queue(plateau.Size(mixed_precision="bf16"), seeds=(0, 1))[:6]}

    def todo(cpu_flags: list[str]) -> list[plateau.Job]:
        monkeypatch.setattr(plateau.machine, "cpu_model_and_flags", lambda: ("a CPU", cpu_flags))
        jobs = plateau.queue(plateau.Size(), seeds=(0, 1, 2), runs=runs)
        assert len(jobs) == len(set(jobs))
        return [job for job in jobs if job.key not in runs]

    monkeypatch.setattr(plateau.torch.cuda, "is_available", lambda: False)
    bf16_cpu = todo(["avx2", "avx512f", "avx512_bf16"])
    assert {(job.seed, job.mixed_precision) for job in bf16_cpu if job.epochs == 20 and job.method != "last"} \
        == {(0, "bf16"), (1, "bf16"), (2, "bf16")}
    assert [j.key for j in bf16_cpu if j.mixed_precision == "no"] == ["last/20ep/no/seed0", "last/20ep/no/seed1",
                                                                       "last/20ep/no/seed2"]
    avx2_cpu = todo(["avx2", "fma"])
    assert {job.mixed_precision for job in avx2_cpu} == {"no"}
    # the same runs, in order, less seed 2's fp32 check: begun in fp32, its last-cycle run is that check
    assert [(j.method, j.seed) for j in avx2_cpu] == [(j.method, j.seed) for j in bf16_cpu][:-1]


def test_bf16s_fp32_check_reaches_every_seed_in_the_precision_it_did_not_start_with(monkeypatch):
    """Two seeds cannot show bf16 on par with fp32: every seed's last-cycle model at the size runs in both, and a
    seed begun in fp32 on a CPU without bf16 gets its bf16 run where bf16 is fast."""
    monkeypatch.setattr(plateau.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(plateau.machine, "cpu_model_and_flags", lambda: ("a CPU", ["avx2", "amx_bf16"]))
    result = results({"last": [0.90, 0.91]})
    result["runs"]["last/20ep/no/seed2"] = record("last", 2, 0.93, 100.0, precision="no")  # begun in fp32
    jobs = plateau.queue(plateau.Size(), seeds=(0, 1, 2), runs=result["runs"])
    assert [job.key for job in jobs[-3:]] == ["last/20ep/no/seed0", "last/20ep/no/seed1", "last/20ep/bf16/seed2"]
    result["runs"]["last/20ep/no/seed0"] = record("last", 0, 0.92, 100.0, precision="no")
    result["runs"]["last/20ep/bf16/seed2"] = record("last", 2, 0.92, 100.0)
    result["runs"]["last/20ep/bf16/seed2"]["date"] = "2026-12-02T00:00:00"  # after the seed's fp32 runs
    summary = plateau.summarize(result, plateau.Size())
    assert summary["seed_precision"] == {0: "bf16", 1: "bf16", 2: "no"}  # the check changes no seed's precision
    assert summary["bf16_minus_fp32_pp"]["per_seed"] == pytest.approx([-2.0, -1.0])  # seeds 0 and 2, each way
    assert summary["methods"]["last"]["test_acc"] == pytest.approx([90.0, 91.0, 93.0])


def test_pairs_across_seeds_of_other_precisions_stay_within_a_seed():
    result = results({"last": [0.90, 0.91], "multilevel": [0.89, 0.91]})
    for method, acc in (("last", 0.95), ("multilevel", 0.96)):  # seed 2 in fp32, paired with itself only
        result["runs"][plateau.Job(method, 2, 20, "no").key] = record(method, 2, acc, 100.0, precision="no")
    result["runs"]["last/20ep/no/seed0"] = record("last", 0, 0.99, 100.0, precision="no")  # seed 0's fp32 check
    result["runs"]["last/20ep/no/seed0"]["date"] = "2026-12-02T00:00:00"  # run after the seed's bf16 runs
    summary = plateau.summarize(result, plateau.Size())
    assert summary["seed_precision"] == {0: "bf16", 1: "bf16", 2: "no"}
    assert summary["multilevel_minus_last_pp"]["per_seed"] == pytest.approx([-1.0, 0.0, 1.0])
    assert summary["methods"]["last"]["test_acc"] == pytest.approx([90.0, 91.0, 95.0])  # not the fp32 check's 99
    assert summary["bf16_minus_fp32_pp"]["per_seed"] == pytest.approx([-9.0])


def test_a_bf16_seed_continued_in_fp32_counts_in_the_mean_and_pairs_only_in_fp32():
    result = results({"last": [0.90, 0.91, 0.92], "multilevel": [0.89, 0.91, 0.92], "first": [0.88, 0.89]})
    result["runs"]["first/20ep/no/seed2"] = record("first", 2, 0.95, 50.0, precision="no")  # continued in fp32
    summary = plateau.summarize(result, plateau.Size())
    first = summary["methods"]["first"]
    assert first["seeds"] == [0, 1, 2] and first["test_acc"] == pytest.approx([88.0, 89.0, 95.0])
    assert first["continued_in_fp32"] == [2] and first["runs"][-1] == "first/20ep/no/seed2"
    assert first["minus_last_pp"]["per_seed"] == pytest.approx([-2.0, -2.0])  # not 95 - 92 against bf16
    assert summary["methods"]["multilevel"]["continued_in_fp32"] == []
    assert "first-cycle model, seed 2." in plateau.markdown({**result, "summary": summary}, plateau.Size())
    result["runs"]["last/20ep/no/seed2"] = record("last", 2, 0.96, 100.0, precision="no")  # its fp32 partner
    summary = plateau.summarize(result, plateau.Size())
    assert summary["methods"]["first"]["minus_last_pp"]["per_seed"] == pytest.approx([-2.0, -2.0, -1.0])
    assert summary["methods"]["last"]["test_acc"] == pytest.approx([90.0, 91.0, 92.0])  # its own seed's bf16 run


def test_paired_interval_is_students_t_over_the_per_seed_differences():
    from scipy import stats

    last = [0.90, 0.91, 0.92, 0.905, 0.915]
    diffs = [-0.004, 0.002, -0.001, 0.003, 0.0]
    result = results({"last": last, "multilevel": [a + d for a, d in zip(last, diffs)]})
    job = plateau.Job
    paired = plateau.paired(result["runs"], [(job("multilevel", s, 20, "bf16"), job("last", s, 20, "bf16"))
                                             for s in range(5)])
    mean, sd = sum(diffs) / 5, math.sqrt(sum((d - sum(diffs) / 5) ** 2 for d in diffs) / 4)
    half = stats.t.ppf(0.975, 4) * sd / math.sqrt(5)
    assert paired["paired"] is True and paired["n"] == 5
    assert paired["mean"] == pytest.approx(100 * mean, abs=1e-9)
    assert paired["ci95"] == pytest.approx([100 * (mean - half), 100 * (mean + half)], abs=1e-9)
    # the seeds' own spread (2 pp) is far wider than the differences': an unpaired interval could not be on par
    assert paired["verdict"] == "on par"


@pytest.mark.parametrize("interval, verdict", [
    (None, "undecided"), ([-0.009, 0.009], "on par"), ([-0.011, 0.005], "undecided"), ([-0.03, -0.001], "worse"),
    ([0.001, 0.02], "better"), ([-0.005, 0.012], "undecided"),
])
def test_verdict(interval, verdict):
    assert plateau.verdict(interval) == verdict


@pytest.mark.parametrize("interval, verdict", [
    ([-0.03, -0.021], "better"), ([0.001, 0.05], "worse"), ([-0.019, 0.019], "on par"), ([-0.03, 0.01], "undecided"),
])
def test_verdict_of_a_loss_difference_lm_growth_s_margin(interval, verdict):
    # a loss: below 0 is better; lm_growth's margin is 0.02 nats per byte, not 1 pp
    assert plateau.verdict(interval, 0.02, higher_is_better=False) == verdict


def test_summary_has_the_issues_schema_and_time_saved_is_paired_by_seed():
    result = results({"last": [0.9, 0.9], "multilevel": [0.89, 0.91], "first": [0.88, 0.88], "no-restart": [0.9, 0.9]},
                     seconds={"last": 200.0, "multilevel": 110.0, "first": 50.0, "no-restart": 110.0})
    summary = plateau.summarize(result, plateau.Size())
    assert summary["seeds"] == [0, 1] and summary["verdict"] == "undecided"
    assert summary["time_saved"]["mean"] == pytest.approx(0.45)
    assert summary["multilevel_minus_last_pp"]["paired"] is True
    assert summary["multilevel_minus_first_pp"]["per_seed"] == pytest.approx([1.0, 3.0])  # what growing kept of depth
    assert summary["pilot"][0]["epochs"] == 20 and summary["pilot"][1]["epochs"] == 40
    assert summary["pilot"][1]["gain_pp"] is None and summary["plateau"] is False  # no doubled run yet
    result["runs"]["last/40ep/bf16/seed0"] = record("last", 0, 0.905, 400.0, epochs=40)
    summary = plateau.summarize(result, plateau.Size())
    assert summary["pilot"][1]["gain_pp"] is None  # a mean over every pilot seed, or none
    result["runs"]["last/40ep/bf16/seed1"] = record("last", 1, 0.905, 400.0, epochs=40)
    summary = plateau.summarize(result, plateau.Size())
    assert summary["pilot"][1]["gain_pp"] == pytest.approx(0.5) and summary["plateau"] is True
    assert summary["plateau_epochs"] == 20 and len(summary["pilot"]) == 2  # a plateau: no third rung


def test_a_size_off_the_plateau_doubles_once_more_and_the_comparison_moves_to_the_plateau():
    """20 -> 40 epochs gains 1.5 pp: the pilot queues 80 epochs on both pilot seeds (before the comparison), and
    once they gain < 1 pp over 40, the comparison moves to 40 epochs (the pilot's 40-epoch runs are its last-cycle
    runs), with the comparison made at 20 kept beside it; the fp32 check stays at the size's 20."""
    size = plateau.Size(mixed_precision="bf16")
    runs = {plateau.Job("last", seed, epochs, "bf16").key: record("last", seed, acc, 100.0, epochs)
            for seed in plateau.PILOT_SEEDS for epochs, acc in ((20, 0.9), (40, 0.915))}
    keys = [job.key for job in plateau.queue(size, seeds=(0, 1, 2), runs=runs)]
    assert keys[:6] == ["last/20ep/bf16/seed0", "last/40ep/bf16/seed0", "last/80ep/bf16/seed0",
                        "last/20ep/bf16/seed1", "last/40ep/bf16/seed1", "last/80ep/bf16/seed1"]
    result = {"size": {}, "runs": runs}
    summary = plateau.summarize(result, size)
    assert [row["epochs"] for row in summary["pilot"]] == [20, 40, 80]
    assert summary["pilot"][2]["gain_pp"] is None and summary["plateau_epochs"] is None
    runs["last/80ep/bf16/seed0"] = record("last", 0, 0.92, 100.0, 80)
    runs["last/80ep/bf16/seed1"] = record("last", 1, 0.925, 100.0, 80)
    summary = plateau.summarize(result, size)
    assert [row["gain_pp"] for row in summary["pilot"][1:]] == [pytest.approx(1.5), pytest.approx(0.75)]
    assert summary["plateau"] is True and summary["plateau_epochs"] == summary["epochs"] == 40
    assert summary["methods"]["last"]["seeds"] == [0, 1] and summary["other_epochs"] == {}
    keys = [job.key for job in plateau.queue(size, seeds=(0, 1), runs=runs)]
    assert len(keys) == 6 + 2 * 4 - 2 + 2  # the pilot stops at PILOT_RUNGS
    assert keys[6:8] == ["multilevel/40ep/bf16/seed0", "multilevel/40ep/bf16/seed1"]
    assert keys[-2:] == ["last/20ep/no/seed0", "last/20ep/no/seed1"]
    runs["last/20ep/no/seed2"] = record("last", 2, 0.9, 100.0, precision="no")  # begun in fp32 on another CPU
    assert "last/40ep/bf16/seed2" in [job.key for job in plateau.queue(size, seeds=(0, 1, 2), runs=runs)]  # new at 40
    runs["multilevel/20ep/bf16/seed0"] = record("multilevel", 0, 0.89, 100.0)  # compared at 20 before the plateau
    runs["multilevel/40ep/bf16/seed0"] = record("multilevel", 0, 0.91, 100.0, 40)
    summary = plateau.summarize(result, size)
    assert summary["multilevel_minus_last_pp"]["per_seed"] == [pytest.approx(-0.5)]
    assert summary["other_epochs"]["20"]["multilevel_minus_last_pp"]["per_seed"] == [pytest.approx(-1.0)]
    assert "## Methods at 20 epochs (before the plateau" in plateau.markdown({**result, "summary": summary}, size)
    runs["last/40ep/bf16/seed1"] = record("last", 1, 0.895, 100.0, 40)  # now 20 -> 40 gains 0.5 pp
    keys = [job.key for job in plateau.queue(size, seeds=(0,), runs=runs)]
    assert "last/80ep/bf16/seed0" not in keys and "multilevel/20ep/bf16/seed0" in keys


def test_time_saved_comes_only_from_runs_that_had_the_machine_to_themselves_else_from_the_quiet_long_result():
    result = results({"last": [0.9, 0.9], "multilevel": [0.89, 0.91], "first": [0.88, 0.88], "no-restart": [0.9, 0.9]},
                     seconds={"last": 200.0, "multilevel": 110.0, "first": 50.0, "no-restart": 110.0})
    result["runs"]["multilevel/20ep/bf16/seed1"] = record("multilevel", 1, 0.91, 190.0, load=3.5)  # beside a job
    summary = plateau.summarize(result, plateau.Size())
    assert summary["time_saved"]["mean"] == pytest.approx(0.45) and summary["time_saved"]["std"] is None
    assert summary["multilevel_minus_last_pp"]["n"] == 2  # its accuracy still counts
    evidence = plateau.SIZES["plateau"]  # names the quiet long benchmark for when no pair here is quiet
    assert plateau.time_saved(summary, evidence)["mean"] == pytest.approx(0.45)  # a quiet pair of its own first
    result["runs"]["multilevel/20ep/bf16/seed0"]["load_average"] = [3.5, 3.5]
    summary = plateau.summarize(result, plateau.Size())
    assert summary["time_saved"]["mean"] is None and plateau.time_saved(summary, plateau.Size())["mean"] is None
    committed = json.loads((plateau.RESULTS / "time_saved_long.json").read_text())
    quiet = committed["summary"]["methods"]["multilevel"]["time_saved_vs_last"]
    kept = plateau.time_saved(summary, evidence)
    assert (kept["mean"], kept["std"]) == (quiet["mean"], quiet["std"]) and "time_saved_long.json" in kept["from"]


def test_a_results_file_of_another_size_is_refused_and_one_of_the_same_is_resumed(tmp_path):
    path = tmp_path / "r.json"
    size = plateau.Size()
    path.write_text(json.dumps({"size": {"train_images": 10000, "epochs": 20, "test_images": None,
                                         "mixed_precision": "bf16", "dataset": "fashion-mnist"},  # no `compile` yet
                                "runs": {"last/20ep/bf16/seed0": record("last", 0, 0.9, 1.0)}}))
    assert list(plateau.load(path, size)["runs"]) == ["last/20ep/bf16/seed0"]
    with pytest.raises(SystemExit, match="another size"):
        plateau.load(path, plateau.Size(epochs=10))


@pytest.mark.slow  # three training runs, each compiling its model
@needs_fashion_mnist
def test_gpu_check_runs_its_code_path_on_a_cpu(growres_env, tmp_path):
    """benchmarks/gpu_check.sh --cpu-smoke: the Table 3 row with bf16, channels-last and torch.compile, tiny, into
    the plateau benchmark's schema."""
    result = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "--cpu-smoke", str(tmp_path)],
                            env=dict(growres_env, OMP_NUM_THREADS=str(os.cpu_count())), capture_output=True,
                            text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((tmp_path / "time_saved_gpu-smoke.json").read_text())
    assert {"seeds", "test_images", "pilot", "multilevel_minus_last_pp", "time_saved", "verdict"} <= written.keys()
    assert written["multilevel_minus_last_pp"]["paired"] is True and written["seeds"] == [0]
    runs = written["runs"].values()
    assert sorted(r["method"] for r in runs) == ["first", "last", "multilevel"]
    for run in runs:
        assert "--compile" in run["command"] and run["command"][run["command"].index("--mixed-precision") + 1] == "bf16"
        assert 0 <= run["test_acc"] <= 1 and run["machine"]["cpu"]
    assert (tmp_path / "time_saved_gpu-smoke.md").read_text().startswith("# growres benchmark")


def test_pace_per_cycle_weighs_each_epoch_by_its_seconds(tmp_path):
    """The benchmarks' images/s per cycle (growres.runs.RunFolder.pace_per_cycle): a cycle's images over its seconds."""
    from growres.runs import RunFolder
    rows = [dict(cycle=1, layers=[2, 2, 2], images_per_second=1000.0, epoch_seconds=1.0),
            dict(cycle=2, layers=[4, 4, 4], images_per_second=100.0, epoch_seconds=10.0),  # the growth epoch
            dict(cycle=2, layers=[4, 4, 4], images_per_second=500.0, epoch_seconds=2.0)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert RunFolder(tmp_path).pace_per_cycle() == {
        1: {"layers": [2, 2, 2], "images_per_second": 1000.0},
        2: {"layers": [4, 4, 4], "images_per_second": 2000.0 / 12.0},  # not the mean of 100 and 500
    }


def test_lm_growth_report_re_summarises_the_committed_results_as_committed(tmp_path):
    # --report recomputes every summary from the runs, and keeps the machine and conditions they were measured under
    committed = BENCHMARKS / "results" / "lm_growth"
    stem = tmp_path / "lm_growth"
    stem.with_suffix(".json").write_text(committed.with_suffix(".json").read_text())
    subprocess.run([sys.executable, str(BENCHMARKS / "lm_growth.py"), "--report", "--output", str(stem)], check=True,
                   capture_output=True, cwd=BENCHMARKS)
    assert stem.with_suffix(".md").read_text() == committed.with_suffix(".md").read_text()
    assert json.loads(stem.with_suffix(".json").read_text()) == json.loads(committed.with_suffix(".json").read_text())


def test_lm_growth_calls_an_operator_better_when_its_loss_is_lower():
    import lm_growth

    result = json.loads((BENCHMARKS / "results" / "lm_growth.json").read_text())
    for run in result["runs"].values():
        if run["method"] == "copy":
            run["val_loss"] -= 0.1  # far below the full depth's in every seed: a loss, so better
        if run["method"] == "identity":
            run["val_loss"] += 0.1
    methods = lm_growth.summarize(result, lm_growth.Size())["methods"]
    assert methods["copy"]["verdict"] == "better" and methods["identity"]["verdict"] == "worse"


def test_workers_run_the_queue_side_by_side_sharing_the_threads_and_write_every_run(tmp_path, monkeypatch):
    import threading

    import torch

    side_by_side, threads_given = threading.Barrier(2, timeout=30), []

    def fake_train(job, size, workdir, threads=None):
        side_by_side.wait()  # breaks (BrokenBarrierError) unless two runs are in progress at once
        threads_given.append(threads)
        return record(job.method, job.seed, 0.9, 10.0, epochs=job.epochs, precision=job.mixed_precision) | {
            "wall_seconds": 10.0, "machine": plateau.machine.describe() | {"threads": threads}}

    monkeypatch.setattr(plateau, "train", fake_train)
    monkeypatch.setattr(plateau, "fastest_precision", lambda: "no")
    monkeypatch.setattr(plateau, "plot", lambda *args: None)
    monkeypatch.setattr(sys, "argv", ["plateau.py", "--size", "smoke", "--seeds", "2", "--workers", "2",
                                      "--output", str(tmp_path / "r")])
    plateau.main()
    written = json.loads((tmp_path / "r.json").read_text())["runs"]
    queued = plateau.queue(plateau.SMOKE, (0, 1), written)
    assert sorted(written) == sorted(job.key for job in queued) and len(queued) % 2 == 0
    assert threads_given == [max(1, torch.get_num_threads() // 2)] * len(queued)


def test_the_pilot_of_a_bf16_seed_doubles_in_fp32_on_a_cpu_without_bf16(monkeypatch):
    """Its 80-epoch rung runs in fp32 there, and then counts: the pilot measures it rather than queueing it anew."""
    monkeypatch.setattr(plateau.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(plateau.machine, "cpu_model_and_flags", lambda: ("an AVX2 CPU", ["avx2", "fma"]))
    runs = {plateau.Job("last", seed, epochs, "bf16").key: record("last", seed, acc, 100.0, epochs)
            for seed in plateau.PILOT_SEEDS for epochs, acc in ((20, 0.9), (40, 0.915))}
    pilot = [job.key for job in plateau.queue(plateau.Size(), seeds=(0,), runs=runs)][:6]
    assert pilot[2] == "last/80ep/no/seed0" and pilot[5] == "last/80ep/no/seed1"
    for seed in plateau.PILOT_SEEDS:
        runs[f"last/80ep/no/seed{seed}"] = record("last", seed, 0.92, 100.0, 80, precision="no")
    summary = plateau.summarize({"size": {}, "runs": runs}, plateau.Size())
    assert summary["pilot"][2]["seeds"] == 2 and summary["pilot"][2]["gain_pp"] == pytest.approx(0.5)
    assert summary["plateau_epochs"] == summary["epochs"] == 40
