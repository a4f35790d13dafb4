"""The Flower engine's logic without Flower's processes: sites answer through a loopback
transport, with records encoded and decoded and site state on disk as in a deployment."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("flwr", reason="Flower is not installed (pip install '.[flower]')")

from fedbcs_lightning.api import fit  # noqa: E402
from fedbcs_lightning.config import ConfigError, merge, resolve  # noqa: E402
from fedbcs_lightning.federation.updates import FederationStopped  # noqa: E402
from fedbcs_lightning.flower.records import (  # noqa: E402
    HEADER,
    decode_instruction,
    encode_instruction,
    pack,
    unpack,
)
from fedbcs_lightning.flower.server import FlowerEngine  # noqa: E402
from fedbcs_lightning.flower.site import Site  # noqa: E402
from fedbcs_lightning.methods.base import Instruction  # noqa: E402
from tests.flower.loopback import LoopbackTransport  # noqa: E402

SITES = {"site1": {}, "site2": {}}


def config(method="fedavg", rounds=2, **server):
    return resolve(
        options={
            "data": {"image_size": 32, "synthetic": {"sites": 2, "images_per_site": 8}},
            "model": {"width": 4},
            "train": {"rounds": rounds, "batch_size": 4, "method": method},
            "fedbcs": {"cdpa": True},  # prototypes travel too
            "server": server,
        }
    )


def quiet(_message: str) -> None:
    pass


def metrics(run_dir):
    """Per round: the sites that trained and the updates left out (from metrics.jsonl)."""
    rounds: dict[int, dict] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        record = rounds.setdefault(row["round"], {"train": {}, "rejected": {}})
        if row["split"] == "train":
            record["train"][row["site"]] = row
        elif row["split"] == "rejected":
            record["rejected"][row["site"]] = row["reason"]
    return [rounds[r] for r in sorted(rounds)]


@pytest.mark.parametrize(
    "method", ["fedavg", "fedprox", "fedbn", "moon", "fpl", "harmofl", "fedbcs", "local"]
)
def test_every_method_trains_the_same_through_the_engine_as_in_process(tmp_path, method):
    cfg = config(method)
    reference = fit(cfg, tmp_path / "in-process", progress=False)
    transport = LoopbackTransport(SITES, tmp_path / "state")
    remote = fit(cfg, tmp_path / "flower", progress=False, engine=FlowerEngine(transport, quiet))
    want, got = reference.result.last_weights, remote.result.last_weights
    assert sorted(got) == sorted(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    same = json.dumps(remote.result.test_last, sort_keys=True)  # NaN-safe (HD95 of no region)
    assert same == json.dumps(reference.result.test_last, sort_keys=True)


@pytest.mark.parametrize(("method", "mode"), [("fedbcs", "sample"), ("fedavg", "client")])
def test_a_private_run_is_the_same_through_the_engine_as_in_process(tmp_path, method, mode):
    cfg = merge(config(method), {"privacy": {"mode": mode, "noise_seed": 3}})
    reference = fit(cfg, tmp_path / "in-process", progress=False)
    transport = LoopbackTransport(SITES, tmp_path / "state")
    remote = fit(cfg, tmp_path / "flower", progress=False, engine=FlowerEngine(transport, quiet))
    want, got = reference.result.last_weights, remote.result.last_weights
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert remote.result.history == reference.result.history  # epsilon spent included


def test_pooled_is_refused_with_the_reason(tmp_path):
    transport = LoopbackTransport(SITES, tmp_path / "state")
    with pytest.raises(ConfigError, match="all sites' images in one place"):
        fit(config("pooled"), tmp_path / "run", engine=FlowerEngine(transport, quiet))
    assert not (tmp_path / "run").exists()


class Corrupting(LoopbackTransport):
    """site2's upload has a NaN in round 1 (a broken or hostile site)."""

    def send(self, contents, kind, timeout):
        replies = super().send(contents, kind, timeout)
        if kind == "fit" and self.sent.count(("fit", sorted(contents))) == 1:
            node = next(n for n in contents if self.sites[n].name == "site2")
            array = next(iter(replies[node]["weights"].values()))
            values = array.numpy().copy()
            values.flat[0] = math.nan
            from flwr.app import Array

            key = next(iter(replies[node]["weights"]))
            replies[node]["weights"][key] = Array(values)
        return replies


def test_a_bad_update_is_rejected_and_logged_not_averaged(tmp_path):
    transport = Corrupting(SITES, tmp_path / "state")
    run = fit(config(), tmp_path / "run", progress=False, engine=FlowerEngine(transport, quiet))
    rounds = metrics(run.run_dir)
    assert "non-finite" in rounds[0]["rejected"]["site2"]
    assert set(rounds[0]["train"]) == {"site1"} and set(rounds[1]["train"]) == set(SITES)
    assert all(torch.isfinite(v.float()).all() for v in run.result.last_weights.values())


def test_a_site_that_does_not_answer_drops_out_of_that_round(tmp_path):
    transport = LoopbackTransport(SITES, tmp_path / "state")
    transport.fail["site2", "fit"] = "error 5: node unavailable"
    run = fit(config(), tmp_path / "run", progress=False, engine=FlowerEngine(transport, quiet))
    rounds = metrics(run.run_dir)
    assert rounds[0]["rejected"] == {"site2": "dropped out: error 5: node unavailable"}
    assert set(rounds[1]["train"]) == set(SITES)


def test_below_the_minimum_the_run_stops_with_the_resume_command(tmp_path):
    transport = LoopbackTransport(SITES, tmp_path / "state")
    engine = FlowerEngine(transport, quiet)
    transport.fail["site2", "fit"] = "no reply within 3600 s"
    with pytest.raises(FederationStopped, match="fewer than the 2 needed") as err:
        fit(config(min_clients=2, sites=2), tmp_path / "run", progress=False, engine=engine)
    assert "The run stopped before any round was saved" in str(err.value)


def test_sites_keep_only_the_states_a_resumed_server_can_ask_for(tmp_path):
    transport = LoopbackTransport(SITES, tmp_path / "state")
    fit(config(rounds=3), tmp_path / "run", progress=False, engine=FlowerEngine(transport, quiet))
    (run_key,) = [p.name for p in (tmp_path / "state").iterdir()]
    kept = sorted(p.name for p in (tmp_path / "state" / run_key / "site1").iterdir())
    assert kept == ["round-00002.pt", "round-00003.pt"]


def test_a_site_not_in_the_data_is_refused_with_the_sites_there(tmp_path):
    transport = LoopbackTransport({"site1": {}, "hospital-x": {}}, tmp_path / "state")
    said = []
    with pytest.raises(FederationStopped, match="fewer than server.min_clients=2"):
        fit(config(min_clients=2), tmp_path / "run", engine=FlowerEngine(transport, said.append))
    assert any("no site 'hospital-x'" in line and "site1, site2" in line for line in said)


def test_a_site_keeps_its_own_data_root_device_and_code(tmp_path):
    site = Site({"site": "site1", "data-root": str(tmp_path), "imports": "json"})
    sent = config().to_dict()
    sent["run"]["imports"] = ["os"]  # what a server could try: run code on the site
    sent["data"]["root"] = "/etc"
    own = site.config(sent)
    assert own.run.imports == ["json"] and own.data.root == str(tmp_path)
    sent["data"]["leave_out"] = ["site1"]
    with pytest.raises(ConfigError, match="keeps site 'site1' out"):
        site.config(sent)


def test_records_carry_nested_extras_exactly():
    extras = {"round": 3, "bank": {"enc/1": torch.arange(4.0)}, "pair": (1, "a"), 2: [None]}
    text, tensors = pack(extras)
    assert unpack(text, tensors)["pair"] == (1, "a")
    content = encode_instruction(Instruction({"w": torch.ones(2, 2)}, extras), {"kind": "fit"})
    header, back = decode_instruction(content)
    assert header["kind"] == "fit" and HEADER in content
    assert torch.equal(back.config["bank"]["enc/1"], torch.arange(4.0))
    assert back.config[2] == [None] and torch.equal(back.weights["w"], torch.ones(2, 2))
