"""The comparison script's table, ordering and plot (on made-up results; training is
covered elsewhere)."""

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(*args: str, timeout: int = 600) -> str:
    """Run a benchmark script with ``args``; its standard output."""
    import os
    import subprocess

    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(
        [sys.executable, *args], cwd=BENCHMARKS, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _quick(script: str, *args: str, timeout: int = 600) -> dict:
    """The JSON a benchmark script prints with ``--quick --json``."""
    import json

    return json.loads(_script(script, "--quick", "--json", *args, timeout=timeout).splitlines()[-1])


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


def test_paired_differences_to_fedavg_per_seed_with_an_interval(compare):
    results = {
        "fedavg": [_run(0.5, 0.7, 0.6), _run(0.3, 0.5, 0.4)],
        "fedbcs": [_run(0.8, 0.6, 0.7), _run(0.6, 0.8, 0.7)],
    }
    table = compare.paired(results).splitlines()
    assert table[2].startswith("| method | model | s1 | s2 | mean over sites |")
    # seed 0: +10 points, seed 1: +30; s1: +30 both seeds; s2: -10 then +30
    assert table[4] == (
        "| fedbcs | selected | +30.0 [+30.0, +30.0] 2/2 | +10.0 [-10.0, +30.0] 1/2 | "
        "+20.0 [+10.0, +30.0] 2/2 |"
    )
    assert compare.paired(results) in compare.report("header", results)
    assert "paired" not in compare.report("header", {"fedbcs": results["fedbcs"]})


def test_folds_pool_each_sites_dice_over_its_test_images(compare, monkeypatch):
    import argparse

    def fake_run(method, seed, fold, args):
        dice = [0.2, 0.8][fold]
        return {
            "selected": {"s1": dice, "s2": 0.5},
            "last": {"s1": dice, "s2": 0.5},
            "test_images": {"s1": [1, 3][fold], "s2": 2},
            "unseen": {"selected": dice, "last": dice},
            "best_round": fold + 1,
            "val_curve": [dice, 1.0],
            "seconds": 2.0,
        }

    monkeypatch.setattr(compare, "run_once", fake_run)
    args = argparse.Namespace(folds=2, leave_out="s3")
    run = compare.run_method("fedavg", 0, args)
    assert run["selected"]["s1"] == pytest.approx((0.2 * 1 + 0.8 * 3) / 4)  # per image
    assert run["selected"]["s3 (unseen)"] == pytest.approx(0.5)  # mean over fold models
    assert run["mean_selected"] == pytest.approx((0.65 + 0.5) / 2)  # sites trained on only
    assert run["best_round"] == [1, 2] and run["folds"] == 2 and run["seconds"] == 4.0
    assert run["val_curve"] == pytest.approx([0.5, 1.0])


def test_from_json_renders_the_seeds_every_method_finished(tmp_path):
    import json

    saved = tmp_path / "compare-synthetic.json"
    runs = {"fedavg": [_run(0.5, 0.7, 0.6), _run(0.3, 0.5, 0.4)], "fedbcs": [_run(0.8, 0.6, 0.7)]}
    saved.write_text(json.dumps({"seeds": [0, 1], "results": runs}))
    printed = _script("compare.py", "--from-json", str(saved))
    table = (tmp_path / "compare-synthetic.md").read_text()
    assert "seeds [0]" in table and "| +10.0 [+10.0, +10.0] 1/1 |\n" in printed
    assert (tmp_path / "compare-synthetic.png").is_file()


def test_from_json_joins_runs_of_other_methods_into_the_first_file(tmp_path):
    import json

    first, second = tmp_path / "compare-synthetic.json", tmp_path / "more.json"
    runs = {"fedavg": [_run(0.5, 0.7, 0.6), _run(0.3, 0.5, 0.4)]}
    first.write_text(json.dumps({"seeds": [0, 1], "results": runs}))
    more = {"fedbcs": [_run(0.8, 0.6, 0.7), _run(0.1, 0.1, 0.1)]}
    second.write_text(json.dumps({"seeds": [0, 1], "results": more}))
    printed = _script("compare.py", "--from-json", str(first), str(second))
    assert "seeds [0, 1]" in printed and "| fedbcs | selected |" in printed
    assert "fedavg (50.0: 60.0 40.0) > fedbcs (40.0: 70.0 10.0)" in printed  # best per seed
    assert set(json.loads(first.read_text())["results"]) == {"fedavg", "fedbcs"}
    first.write_text(json.dumps({"seeds": [0, 1], "results": runs}))
    second.write_text(json.dumps({"seeds": [1, 0], "results": {"fedbcs": more["fedbcs"][::-1]}}))
    again = _script("compare.py", "--from-json", str(first), str(second))  # matched by seed
    assert "fedavg (50.0: 60.0 40.0) > fedbcs (40.0: 70.0 10.0)" in again


def test_from_json_appends_runs_of_the_same_methods_with_other_seeds(tmp_path):
    import json

    first, second = tmp_path / "compare-synthetic.json", tmp_path / "more.json"
    runs = {"fedavg": [_run(0.5, 0.7, 0.6)], "fedbcs": [_run(0.8, 0.6, 0.7)]}
    first.write_text(json.dumps({"seeds": [0], "results": runs}))
    more = {"fedavg": [_run(0.3, 0.5, 0.4)], "fedbcs": [_run(0.1, 0.1, 0.1)]}
    second.write_text(json.dumps({"seeds": [5], "results": more}))
    printed = _script("compare.py", "--from-json", str(first), str(second))
    assert "seeds [0, 5]" in printed
    assert "fedavg (50.0: 60.0 40.0) > fedbcs (40.0: 70.0 10.0)" in printed
    assert json.loads(first.read_text())["seeds"] == [0, 5]
    with pytest.raises(AssertionError, match=r"method 'fedavg', seed 5 was run before"):
        _script("compare.py", "--from-json", str(first), str(second))


def test_from_json_joins_methods_whose_seeds_come_from_several_files(tmp_path):
    import json

    first, second = tmp_path / "compare-synthetic.json", tmp_path / "more.json"
    runs = {"fedavg": [_run(0.5, 0.7, 0.6), _run(0.3, 0.5, 0.4)], "fedbcs": [_run(0.8, 0.6, 0.7)]}
    first.write_text(json.dumps({"seeds": [0, 1], "results": runs}))
    more = {"fedbcs": [_run(0.1, 0.1, 0.1)], "moon": [_run(0.2, 0.2, 0.2)]}
    second.write_text(json.dumps({"seeds": [1], "results": more}))
    printed = _script("compare.py", "--from-json", str(first), str(second))
    assert "seeds [1]" in printed and "| moon | selected |" in printed  # moon only has seed 1
    saved = json.loads(first.read_text())
    assert saved["seeds"] == [1] and set(saved["results"]) == {"fedavg", "fedbcs", "moon"}


def test_method_variants_set_options_of_the_methods_section(compare):
    assert compare.variant("fedbcs:cdpa=false,tau=0.5") == (
        "fedbcs",
        ["fedbcs.cdpa=false", "fedbcs.tau=0.5"],
    )
    assert compare.variant("fedprox") == ("fedprox", [])


def test_a_bad_method_variant_fails_before_any_training():
    import os
    import subprocess

    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(
        [sys.executable, "compare.py", "--quick", "--methods", "fedavg", "fedbcs:nope=1"],
        cwd=BENCHMARKS, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "fedbcs.nope" in done.stderr


def test_smoke_runs_never_write_into_the_committed_results(compare, tmp_path):
    assert compare.output_folder(None, quick=False) == BENCHMARKS / "results"
    smoke = compare.output_folder(None, quick=True)
    assert smoke.is_dir() and BENCHMARKS not in smoke.parents
    assert compare.output_folder(tmp_path, quick=True) == tmp_path


def test_eval_cost_quick_prints_both_ways_for_every_site():
    result = _quick("eval_cost.py")
    assert sorted(result["sites"]) == ["site0", "site1", "site2"]
    for site in result["sites"].values():
        assert site["val_windows_s"] > 0 and site["val_whole_s"] > 0
        assert 0 <= site["dice_whole"] <= 1 and 0 <= site["dice_windows"] <= 1


def test_compare_quick_folds_and_leave_out_report_the_unseen_site(tmp_path):
    options = ["--methods", "fedavg", "--leave-out", "site4", "--folds", "2"]
    result = _quick("compare.py", *options, "--out", str(tmp_path))
    (run,) = result["results"]["fedavg"]
    assert set(run["selected"]) == {"site1", "site2", "site3", "site4 (unseen)"}
    assert run["folds"] == 2 and len(run["best_round"]) == 2
    assert (tmp_path / "compare-synthetic-2fold-without-site4.md").is_file()


@pytest.mark.skipif(
    importlib.util.find_spec("flwr") is None, reason="Flower is not installed (.[flower])"
)
def test_flower_vs_inprocess_quick_times_both_engines():
    result = _quick("flower_vs_inprocess.py", timeout=900)["fedavg"]
    assert len(result["in_process_s"]) == 2 and len(result["flower_s"]) == 2
    assert all(t > 0 for t in result["in_process_s"] + result["flower_s"])
    assert result["bytes"]["down_weights"] == result["bytes"]["up_weights"] > 0


def test_checkpoint_cost_quick_stores_shared_tensors_once():
    result = _quick("checkpoint_cost.py")
    for method in ("fedavg", "fedbn"):
        # after validation the clients and the selected model hold the global weights:
        # one copy instead of six (the clients' optimiser moments stay their own)
        assert result[method]["shared_bytes"] < 0.8 * result[method]["separate_bytes"]
        assert result[method]["now_bytes"] == result[method]["shared_bytes"]  # CRCs: no bytes


def test_loop_overhead_quick_times_four_loops():
    times = _quick("loop_overhead.py")["seconds_per_round"]
    assert len(times) == 4 and all(len(t) == 2 and min(t) > 0 for t in times.values())


def test_step_cost_quick_reports_time_and_memory_against_fedavg():
    rows = {r["variant"]: r for r in _quick("step_cost.py")["rows"]}
    assert list(rows) == [
        "fedavg",
        "fedbcs",
        "fedbcs-fft-fsr",
        "fedbcs-cdpa",
        "fedbcs-cdpa-all-anchors",
        "fedbcs-cdpa-dense",
    ]
    assert rows["fedavg"]["ratio"] == rows["fedavg"]["peak_ratio"] == 1.0
    for row in rows.values():
        assert row["median_s"] > 0 and row["peak_mb"] > 0 and row["training_mb"] > 0
    # the reference's dense descriptors hold 768-channel maps at full resolution
    assert rows["fedbcs-cdpa-dense"]["training_mb"] > rows["fedbcs-cdpa"]["training_mb"]


def test_fedbcs_vs_fedavg_quick_trains_the_default_and_the_papers_fedbcs():
    results = _quick("fedbcs_vs_fedavg.py")["results"]
    assert list(results) == [
        "fedavg",
        "fedbcs (default: FSR alone)",
        "fedbcs with CDPA (the paper's)",
    ]
    for (run,) in results.values():
        assert 0 <= run["selected"] <= 1 and 1 <= run["best_round"] <= 4
    # the variants train different models from the same start
    assert len({run["last"] for (run,) in results.values()}) == 3


def test_privacy_quick_reports_dice_against_epsilon():
    rows = _quick("privacy.py")["rows"]
    assert {(r["method"], r["noise"]) for r in rows} == {
        (method, noise) for method in ("fedavg", "fedbcs") for noise in (0.0, -1.0, 1.0)
    }  # off, off with GroupNorm, one noise level
    private = [r for r in rows if r["noise"] > 0]
    assert all(0 < r["epsilon"] < float("inf") and 0 <= r["selected"] <= 1 for r in private)


def test_gpu_throughput_quick_runs_on_the_cpu_and_reports_every_method():
    result = _quick("gpu_throughput.py")
    assert set(result["results"]) == {"fedavg 32 eager", "fedbcs 32 eager", "fedbcs-cdpa 32 eager"}
    for run in result["results"].values():
        assert run["images_per_s"] > 0 and run["rounds_timed"] == 2


def test_privacy_refuses_a_bad_option_before_any_training(tmp_path):
    with pytest.raises(AssertionError, match=r"fedbcs:fedbcs\.nope=1: unknown config key"):
        _script("privacy.py", "--methods", "fedavg", "fedbcs:fedbcs.nope=1", "--out", str(tmp_path))
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written


def test_regions_and_vcdr_error_table_with_the_paired_difference(compare):
    def run(cup, vcdr):
        metrics = {"dice/disc": 0.9, "dice/cup": cup, "dice": (0.9 + cup) / 2, "vcdr_error": vcdr}
        return {**_run(0.5, 0.5, 0.5), "metrics": {"selected": {"s1": metrics, "s2": metrics}}}

    results = {
        "fedavg": [run(0.6, 0.10), run(0.6, 0.12)],
        "fedbcs": [run(0.7, 0.06), run(0.7, 0.08)],
    }
    text = compare.regions_table(results)
    assert "| method | Dice disc | Dice cup | vcdr_error | vCDR error vs fedavg |" in text
    assert "-0.0400 [-0.0400, -0.0400]" in text
    assert compare.regions_table({"fedavg": [_run(0.5, 0.5, 0.5)]}) == ""  # older results


def test_update_norms_quick_reports_the_largest_honest_ratio():
    result = _quick("update_norms.py")
    assert {r["method"] for r in result["runs"]} == {"fedavg", "fedbcs"}
    assert 0 < result["largest"] < 10


def test_prediction_figure_quick_draws_both_methods(tmp_path):
    out = tmp_path / "figure.png"
    result = _quick("prediction_figure.py", "--out", str(out))
    assert set(result["test_dice"]) == {"fedavg", "fedbcs"}
    assert all(0.0 <= d <= 1.0 for m in result["test_dice"].values() for d in m.values())
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
