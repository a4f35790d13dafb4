"""A real deployment on 127.0.0.1: `fedbcs serve` (SuperLink + server app) and one
`fedbcs join` (SuperNode) per site, all separate processes, on the synthetic sites.

Equivalence tolerance: sites run the same float32 CPU kernels on the same batches in the
same order as the in-process run, and the server averages in float64 in the same client
order, so the weights agree bitwise on one machine; 1e-6 leaves room for an intra-op
thread split that differs between processes, far below a training step's effect
(~1e-3)."""

from __future__ import annotations

import json
import subprocess
from importlib.util import find_spec

import pytest
import yaml

from tests.flower.deployment import FEDBCS, TINY, Deployment, make_credentials

pytestmark = pytest.mark.skipif(
    find_spec("flwr") is None, reason="Flower is not installed (pip install '.[flower]')"
)
SITES = ["site1", "site2", "site3"]
THREE = [*TINY, "--set", "data.synthetic.sites=3"]


def in_process(run_dir, out_dir):
    """The same run, trained in one process from the config the server saved."""
    from fedbcs_lightning.api import fit
    from fedbcs_lightning.config import from_dict

    config = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    return fit(config, out_dir, progress=False)


def assert_same_weights(run_dir, reference_dir):
    from fedbcs_lightning.io import load_checkpoint

    got = load_checkpoint(run_dir / "checkpoints" / "last.pt")["state_dict"]
    want = load_checkpoint(reference_dir / "checkpoints" / "last.pt")["state_dict"]
    assert sorted(got) == sorted(want)
    worst = max(float((got[k].double() - want[k].double()).abs().max()) for k in want)
    assert worst <= 1e-6, f"largest difference {worst}"


def rounds_done(run_dir) -> list[dict]:
    """Per finished round: its number, the sites that trained, the updates left out."""
    path = run_dir / "metrics.jsonl"
    rounds: dict[int, dict] = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        row = json.loads(line)
        record = rounds.setdefault(row["round"], {"round": row["round"], "train": {},
                                                  "rejected": {}})  # fmt: skip
        if row["split"] == "train":
            record["train"][row["site"]] = row
        elif row["split"] == "rejected":
            record["rejected"][row["site"]] = row["reason"]
    return [rounds[r] for r in sorted(rounds)]


def test_fedavg_on_flower_equals_in_process_and_evaluates(tmp_path):
    run = tmp_path / "run"
    deployment = Deployment(tmp_path)
    try:
        deployment.serve("--method", "fedavg", "--rounds", "2", *THREE, "--set",
                         "run.eval_every=2", "--sites", "3", "--output", str(run))  # fmt: skip
        for site in SITES:
            deployment.join(site)
        assert deployment.wait_server(900) == 0, deployment.log()
    finally:
        deployment.close()
    for name in ("config.yaml", "splits.json", "metrics.jsonl", "summary.json"):
        assert (run / name).is_file(), name
    for name in ("last.pt", "selected.pt", "state.pt"):
        assert (run / "checkpoints" / name).is_file(), name
    in_process(run, tmp_path / "reference")
    assert json.loads((run / "splits.json").read_text()) == json.loads(
        (tmp_path / "reference" / "splits.json").read_text()
    )
    assert_same_weights(run, tmp_path / "reference")
    scored = subprocess.run(
        [FEDBCS, "evaluate", str(run / "checkpoints" / "last.pt")], capture_output=True, text=True
    )
    assert scored.returncode == 0, scored.stderr
    assert all(site in scored.stdout for site in SITES)


def test_fedbcs_over_tls_with_site_authentication(tmp_path):
    creds = make_credentials(tmp_path / "creds", [*SITES, "site4", "stranger"])
    run = tmp_path / "run"
    deployment = Deployment(tmp_path, tls=creds)
    keys = [arg for site in SITES for arg in ("--site-key", str(creds[f"{site}.pub"]))]
    keys += ["--site-key", f"site4={creds['site4.pub']}"]  # a site that is not in the data
    try:
        options = ["--method", "fedbcs", "--rounds", "2", *THREE, "--set", "run.eval_every=2"]
        options += ["--set", "fedbcs.cdpa=true"]  # prototypes travel too
        deployment.serve(*options, "--sites", "3", "--output", str(run), *keys)
        # site4's key, used by a node that says it is site1: the key admits site4 only.
        deployment.join("site1", "--key", str(creds["site4"]), log="impostor")
        deployment.wait_for(lambda: "signs with the key of site 'site4'" in deployment.log(),
                            300, "the impostor's refusal")  # fmt: skip
        for site in SITES:
            deployment.join(site, "--key", str(creds[site]))
        # A site whose key the server does not know is refused.
        stranger = deployment.join("stranger", "--key", str(creds["stranger"]), "--max-wait", "20")
        assert stranger.wait(300) == 3
        assert "refused this site's key" in deployment.log("stranger")
        # A site without TLS never gets in (it gives up after --max-wait).
        plain = deployment.join("plain", "--max-wait", "20", insecure=True)
        assert plain.wait(300) != 0
        assert deployment.wait_server(900) == 0, deployment.log()
    finally:
        deployment.close()
    assert "sites: site1, site2, site3" in deployment.log()
    in_process(run, tmp_path / "reference")
    assert_same_weights(run, tmp_path / "reference")


def test_a_site_killed_mid_round_drops_out_and_rejoins(tmp_path):
    """Killed once round 1 is recorded, site3 drops out of the round under way (round 2,
    or round 3 where round 2 ended first) and, back at once as a new node, trains again
    in a later round; the run goes on with the other two meanwhile."""
    run = tmp_path / "run"
    deployment = Deployment(tmp_path)
    try:
        deployment.serve("--method", "fedavg", "--rounds", "4", *THREE, "--set",
                         "run.eval_every=4", "--sites", "3", "--min-sites", "2",
                         "--output", str(run))  # fmt: skip
        for site in SITES:
            deployment.join(site)
        deployment.wait_for(lambda: len(rounds_done(run)) >= 1, 600, "round 1")
        deployment.kill("site3")
        deployment.join("site3")  # back at once, as a new node
        assert deployment.wait_server(900) == 0, deployment.log()
    finally:
        deployment.close()
    rounds = rounds_done(run)
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert set(rounds[0]["train"]) == set(SITES)
    dropped = [r["round"] for r in rounds if "site3" in r["rejected"]]
    assert dropped and dropped[0] in (2, 3), rounds
    assert all("dropped out" in rounds[r - 1]["rejected"]["site3"] for r in dropped)
    for r in dropped:  # the others went on without it
        assert set(rounds[r - 1]["train"]) == {"site1", "site2"}
    assert set(rounds[-1]["train"]) == set(SITES), deployment.log()
    assert "site site3 joined again" in deployment.log()


def test_below_the_minimum_the_run_stops_and_a_restarted_server_resumes_exactly(tmp_path):
    run = tmp_path / "run"
    two = [*TINY, "--set", "data.synthetic.sites=2"]
    deployment = Deployment(tmp_path)
    try:
        deployment.serve("--method", "fedavg", "--rounds", "3", *two, "--set",
                         "run.eval_every=3", "--sites", "2", "--min-sites", "2",
                         "--output", str(run))  # fmt: skip
        for site in SITES[:2]:
            deployment.join(site)
        deployment.wait_for(lambda: len(rounds_done(run)) >= 1, 600, "round 1")
        deployment.kill("site2")
        assert deployment.wait_server(900) == 1, deployment.log()
        assert "fewer than the 2 needed" in deployment.log()
        assert "fedbcs serve --resume" in deployment.log()
        from fedbcs_lightning.io import load_checkpoint

        assert load_checkpoint(run / "checkpoints" / "state.pt")["trainer"]["round"] == 1
        deployment.join("site2")
        deployment.serve("--resume", str(run))
        assert deployment.wait_server(900) == 0, deployment.log()
    finally:
        deployment.close()
    assert [r["round"] for r in rounds_done(run)] == [1, 2, 3]
    in_process(run, tmp_path / "reference")
    assert_same_weights(run, tmp_path / "reference")


def test_a_plugin_method_with_client_hooks_trains_on_flower_as_in_process(tmp_path):
    """The example plugin's method (server momentum, a client-side update bound, its own
    options) and backbone run on the sites and the server through --import, and give the
    in-process weights."""
    import sys
    from pathlib import Path

    plugin = Path(__file__).resolve().parents[2] / "examples" / "plugin" / "src"
    run = tmp_path / "run"
    two = [*TINY, "--set", "data.synthetic.sites=2", "--import", "fedbcs_example_plugin"]
    options = ["--set", "fedavgm.clip=5", "--set", "fedavgm.momentum=0.5",
               "--set", "model.backbone=tiny-unet", "--set", "model.options.depth=3"]  # fmt: skip
    deployment = Deployment(tmp_path)
    deployment.env["PYTHONPATH"] = str(plugin)
    try:
        deployment.serve("--method", "fedavgm", "--rounds", "2", *two, *options,
                         "--sites", "2", "--output", str(run))  # fmt: skip
        for site in SITES[:2]:
            deployment.join(site, "--import", "fedbcs_example_plugin")
        assert deployment.wait_server(900) == 0, deployment.log()
    finally:
        deployment.close()
    assert (
        "fedavgm:\n  server_lr: 1.0\n  momentum: 0.5\n  clip: 5.0"
        in (run / "config.yaml").read_text()
    )
    sys.path.insert(0, str(plugin))
    try:
        import fedbcs_example_plugin  # noqa: F401  (registers tiny-unet and fedavgm)

        in_process(run, tmp_path / "reference")
    finally:
        sys.path.remove(str(plugin))
    assert_same_weights(run, tmp_path / "reference")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("update_norm" in row for row in rows if row.get("split") == "train")
