"""The comparison script's table, ordering and plot (on made-up results; training is
covered elsewhere)."""

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def compare(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("compare")
    yield module
    sys.modules.pop("compare", None)


def _run(a, b, mean):
    return {
        "selected": {"s1": a, "s2": b},
        "last": {"s1": a - 0.1, "s2": b - 0.1},
        "mean_selected": mean,
        "mean_last": mean - 0.1,
        "val_curve": [0.1, mean],
        "seconds": 10.0,
    }


def test_table_ordering_and_plot(compare, tmp_path):
    results = {
        "fedavg": [_run(0.5, 0.7, 0.6), _run(0.3, 0.5, 0.4)],
        "fedbcs": [_run(0.8, 0.6, 0.7), _run(0.6, 0.8, 0.7)],
    }
    table = compare.table(results).splitlines()
    assert table[0].startswith("| method | model | s1 | s2 | mean over sites |")
    assert (
        table[2] == "| fedavg | selected | 0.4000 ± 0.1414 | 0.6000 ± 0.1414 | "
        "0.5000 ± 0.1414 | +0.0 | 10 |"
    )
    assert table[4].startswith("| fedbcs | selected | 0.7000 ± 0.1414 | 0.7000 ± 0.1414 | 0.7000")
    assert table[4].endswith("| +20.0 | 10 |")
    assert compare.ordering(results) == "fedbcs (70.0) > fedavg (50.0)"
    curves = compare.curves(results).splitlines()
    assert curves[0] == "| validation Dice | r1 | r2 |"
    assert curves[2] == "| fedavg | 0.100 | 0.500 |" and curves[3] == "| fedbcs | 0.100 | 0.700 |"
    assert compare.curves(results) in compare.report("header", results)
    compare.plot(results, tmp_path / "plot.png", "title")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_smoke_runs_never_write_into_the_committed_results(compare, tmp_path):
    assert compare.output_folder(None, quick=False) == BENCHMARKS / "results"
    smoke = compare.output_folder(None, quick=True)
    assert smoke.is_dir() and BENCHMARKS not in smoke.parents
    assert compare.output_folder(tmp_path, quick=True) == tmp_path


def test_eval_cost_quick_prints_both_ways_for_every_site():
    import json
    import os
    import subprocess

    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(
        [sys.executable, "eval_cost.py", "--quick", "--json"],
        cwd=BENCHMARKS,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(result["sites"]) == ["site0", "site1", "site2"]
    for site in result["sites"].values():
        assert site["val_windows_s"] > 0 and site["val_whole_s"] > 0
        assert 0 <= site["dice_whole"] <= 1 and 0 <= site["dice_windows"] <= 1


def test_compare_quick_leave_out_reports_the_unseen_site(tmp_path):
    import json
    import os
    import subprocess

    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    command = [sys.executable, "compare.py", "--quick", "--methods", "fedavg"]
    command += ["--leave-out", "site4", "--out", str(tmp_path), "--json"]
    done = subprocess.run(
        command, cwd=BENCHMARKS, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    (run,) = result["results"]["fedavg"]
    assert set(run["selected"]) == {"site1", "site2", "site3", "site4 (unseen)"}
    assert (tmp_path / "compare-synthetic-without-site4.md").is_file()


@pytest.mark.skipif(
    importlib.util.find_spec("flwr") is None, reason="Flower is not installed (.[flower])"
)
def test_flower_vs_inprocess_quick_times_both_engines():
    import json
    import os
    import subprocess

    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(
        [sys.executable, "flower_vs_inprocess.py", "--quick", "--json"],
        cwd=BENCHMARKS, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])["fedavg"]
    assert len(result["in_process_s"]) == 2 and len(result["flower_s"]) == 2
    assert all(t > 0 for t in result["in_process_s"] + result["flower_s"])
    assert result["bytes"]["down_weights"] == result["bytes"]["up_weights"] > 0


def _quick(script: str) -> dict:
    import json
    import os
    import subprocess

    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(
        [sys.executable, script, "--quick", "--json"],
        cwd=BENCHMARKS, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_checkpoint_cost_quick_stores_shared_tensors_once():
    result = _quick("checkpoint_cost.py")
    for method in ("fedavg", "fedbn"):
        # after validation the clients and the selected model hold the global weights:
        # one copy instead of six (the clients' optimiser moments stay their own)
        assert result[method]["shared_bytes"] < 0.8 * result[method]["separate_bytes"]


def test_loop_overhead_quick_times_three_loops():
    times = _quick("loop_overhead.py")["seconds_per_round"]
    assert len(times) == 3 and all(len(t) == 2 and min(t) > 0 for t in times.values())


def test_privacy_quick_reports_dice_against_epsilon():
    rows = _quick("privacy.py")["rows"]
    assert {(r["method"], r["noise"]) for r in rows} == {
        (method, noise) for method in ("fedavg", "fedbcs") for noise in (0.0, -1.0, 1.0)
    }  # off, off with GroupNorm, one noise level
    private = [r for r in rows if r["noise"] > 0]
    assert all(0 < r["epsilon"] < float("inf") and 0 <= r["selected"] <= 1 for r in private)
