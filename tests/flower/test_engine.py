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
        fit(
            config(min_clients=2, join_timeout=5),
            tmp_path / "run",
            engine=FlowerEngine(transport, said.append),
        )
    assert any("no site 'hospital-x'" in line and "site1, site2" in line for line in said)


def test_a_site_keeps_its_own_data_root_device_and_code(tmp_path):
    site = Site({"site": "site1", "data-root": str(tmp_path), "imports": "json"})
    sent = config().to_dict()
    sent["run"]["imports"] = ["os"]  # what a server could try: run code on the site
    sent["data"]["name"] = "sites"  # a data set read from a folder
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


class Tampering(LoopbackTransport):
    """Replies of one site and kind pass through ``tamper`` (a broken or hostile site)."""

    def __init__(self, *args, site="site2", kind="fit", tamper=None, rounds=(1,)):
        super().__init__(*args)
        self.target, self.kind, self.tamper, self.rounds = site, kind, tamper, rounds
        self.calls = 0

    def send(self, contents, kind, timeout):
        replies = super().send(contents, kind, timeout)
        if kind != self.kind:
            return replies
        self.calls += 1
        if self.calls in self.rounds:
            node = next(n for n in contents if self.sites[n].name == self.target)
            replies[node] = self.tamper(replies[node])
        return replies


def _header(**changes):
    """A tamper that changes the reply's header values (None removes the key)."""
    from flwr.app import ConfigRecord, RecordDict

    def tamper(reply):
        header = dict(reply[HEADER])
        for key, value in changes.items():
            header.pop(key, None) if value is None else header.__setitem__(key, value)
        return RecordDict({**{k: v for k, v in reply.items() if k != HEADER},
                           HEADER: ConfigRecord(header)})  # fmt: skip

    return tamper


def _without(name):
    from flwr.app import RecordDict

    return lambda reply: RecordDict({k: v for k, v in reply.items() if k != name})


MALFORMED = {
    "no header": (_without(HEADER), "no 'fedbcs' record"),
    "empty": (lambda reply: __import__("flwr.app").app.RecordDict({}), "no 'fedbcs' record"),
    "no weights": (_without("weights"), "no 'weights' record"),
    "count is text": (_header(**{"num-examples": "seven"}), "whole number, got 'seven'"),
    "count is fractional": (_header(**{"num-examples": 7.9}), "whole number, got 7.9"),
    "count is missing": (_header(**{"num-examples": None}), "lacks 'num-examples'"),
    "payload not JSON": (_header(payload="{not json"), "payload cannot be read"),
    "payload tensor missing": (
        _header(payload='{"__tensor__": "t99"}'),
        "payload cannot be read",
    ),
    "site name not text": (_header(client=3), "site name is a int"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_reply_is_a_rejected_update_and_the_round_goes_on(tmp_path, case):
    tamper, reason = MALFORMED[case]
    transport = Tampering(SITES, tmp_path / "state", tamper=tamper)
    run = fit(config(), tmp_path / "run", progress=False, engine=FlowerEngine(transport, quiet))
    rounds = metrics(run.run_dir)
    assert "malformed reply" in rounds[0]["rejected"]["site2"]
    assert reason in rounds[0]["rejected"]["site2"]
    assert set(rounds[0]["train"]) == {"site1"} and set(rounds[1]["train"]) == set(SITES)


def test_a_malformed_metrics_reply_costs_that_sites_metrics_only(tmp_path):
    from flwr.app import ConfigRecord, RecordDict

    def bad(reply):
        return RecordDict({HEADER: ConfigRecord({"reply": '{"metrics": {"dice": "high"}}'})})

    transport = Tampering(SITES, tmp_path / "state", kind="evaluate", tamper=bad)
    said = []
    run = fit(config(), tmp_path / "run", progress=False,
              engine=FlowerEngine(transport, said.append))  # fmt: skip
    assert set(run.result.history[0]["val"]["sites"]) == {"site1"}
    assert any("malformed reply: metric 'dice' is not a number" in line for line in said)


class Rejoining(LoopbackTransport):
    """site2's node goes offline after round ``leaves`` and comes back, with the same node
    ID (as an authenticated SuperNode does), after round ``returns``."""

    def __init__(self, *args, leaves=1, returns=2):
        super().__init__(*args)
        self.offline: set[int] = set()
        self.leaves, self.returns = leaves, returns
        self.node = next(n for n, site in self.sites.items() if site.name == "site2")

    def node_ids(self):
        return sorted(set(self.sites) - self.offline)

    def send(self, contents, kind, timeout):
        replies = super().send({n: c for n, c in contents.items() if n not in self.offline},
                               kind, timeout)  # fmt: skip
        return {n: replies.get(n, "no reply (the site went offline)") for n in contents}


class Schedule:
    """Takes site2 offline and back at the end of the rounds its transport names."""

    def __init__(self, transport):
        self.transport = transport

    def __getattr__(self, hook):
        return lambda *args: None

    def on_round_end(self, trainer, server_round, record):
        if server_round == self.transport.leaves:
            self.transport.offline.add(self.transport.node)
        if server_round == self.transport.returns:
            self.transport.offline.clear()

    def state_dict(self):
        return {}


def test_a_site_that_leaves_and_comes_back_trains_again_and_selection_compares_like(tmp_path):
    transport = Rejoining(SITES, tmp_path / "state", leaves=1, returns=2)
    said = []
    run = fit(config(rounds=4), tmp_path / "run", progress=False, callbacks=[Schedule(transport)],
              engine=FlowerEngine(transport, said.append))  # fmt: skip
    rounds = metrics(run.run_dir)
    assert set(rounds[0]["train"]) == set(SITES)
    assert set(rounds[1]["train"]) == {"site1"} and "site2" in rounds[1]["rejected"]
    assert set(rounds[2]["train"]) == set(SITES) and set(rounds[3]["train"]) == set(SITES)
    assert "site site2 disconnected" in said and "site site2 joined again" in said
    history = run.result.history
    assert set(history[1]["val"]["sites"]) == {"site1"}
    complete = [h["round"] for h in history if len(h["val"]["sites"]) == 2]
    assert run.result.best_round in complete  # a one-site mean never beats two-site means
    assert set(run.result.test_last) == set(SITES)


def claiming(tmp_path, names: list[str]) -> tuple[LoopbackTransport, list[int]]:
    """Nodes (in node-ID order) that say they are the sites ``names`` (repeats allowed)."""
    transport = LoopbackTransport({f"node{k}": {} for k in range(len(names))}, tmp_path / "s")
    nodes = sorted(transport.sites)
    for node, name in zip(nodes, names, strict=True):
        transport.sites[node].name = name
    return transport, nodes


def test_a_node_whose_key_is_no_sites_key_is_refused(tmp_path):
    transport, (one, two, other) = claiming(tmp_path, ["site1", "site2", "site1"])
    said = []
    engine = FlowerEngine(transport, said.append, site_nodes={"site1": one, "site2": two})
    run = fit(config(sites=2, min_clients=2), tmp_path / "run", progress=False, engine=engine)
    assert set(run.result.test_last) == {"site1", "site2"}
    assert any(f"node {other} refused" in line and "none of the sites' keys" in line
               for line in said)  # fmt: skip
    assert all(other not in nodes for kind, nodes in transport.sent if kind == "fit")


def test_a_site_key_admits_only_the_site_it_was_registered_for(tmp_path):
    """site2's key used by a node that says it is site1: refused, and the real site1
    trains; --sites counts distinct sites, so the run waits for site2 until join_timeout."""
    transport, (real, stolen) = claiming(tmp_path, ["site1", "site1"])
    said = []
    engine = FlowerEngine(transport, said.append, site_nodes={"site1": real, "site2": stolen})
    run = fit(config(sites=2, join_timeout=2), tmp_path / "run", progress=False, engine=engine)
    assert set(run.result.test_last) == {"site1"}
    assert any(f"node {stolen} refused" in line and "key of site 'site2'" in line
               for line in said)  # fmt: skip
    assert all(stolen not in nodes for kind, nodes in transport.sent if kind == "fit")


def test_without_authentication_a_connected_site_keeps_its_name(tmp_path):
    transport, (first, second, two) = claiming(tmp_path, ["site1", "site1", "site2"])
    said = []
    engine = FlowerEngine(transport, said.append)
    run = fit(config(sites=2, min_clients=2), tmp_path / "run", progress=False, engine=engine)
    assert set(run.result.test_last) == {"site1", "site2"}
    assert any(f"node {second} refused" in line and "already connected" in line for line in said)
    assert all(second not in nodes for kind, nodes in transport.sent if kind == "fit")


def test_a_run_key_that_is_a_path_is_refused_by_the_site(tmp_path):
    from fedbcs_lightning.flower.records import decode_reply

    site = Site({"site": "site1", "state-dir": str(tmp_path / "state")})
    header = {"kind": "fit", "round": 1, "keep-from": 0, "config": json.dumps(config().to_dict())}
    for key in ("../../outside", "/etc", "a" * 31, "g" * 32):
        reply = site.handle(encode_instruction(Instruction({}, {}), {**header, "run-key": key}))
        assert "not 32 hex digits" in decode_reply(reply)["error"]
    assert not (tmp_path / "outside").exists() and not any((tmp_path / "state").glob("**/*.pt"))


class SlowGrid:
    """Replies to each pushed message at its own pull (None: never)."""

    def __init__(self, answer_at: list[int | None]) -> None:
        self.answer_at, self.pulls = answer_at, 0

    def push_messages(self, messages):
        return [str(i) for i in range(len(messages))]

    def pull_messages(self, ids):
        from types import SimpleNamespace

        self.pulls += 1
        return [
            SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i))
            for i in sorted(ids)
            if self.answer_at[int(i)] is not None and self.answer_at[int(i)] <= self.pulls
        ]


def test_replies_are_collected_as_they_come_not_every_three_seconds():
    import time

    from fedbcs_lightning.flower.server import exchange

    grid = SlowGrid([1, 3, 4])
    started = time.monotonic()
    replies = exchange(grid, [object()] * 3, timeout=30)
    assert len(replies) == 3 and grid.pulls == 4
    assert time.monotonic() - started < 1.0  # pauses of 50, 100 and 200 ms
    silent = SlowGrid([1, None])
    started = time.monotonic()
    assert len(exchange(silent, [object()] * 2, timeout=1.5)) == 1
    assert 1.5 <= time.monotonic() - started < 2.5  # gives up at the time-out
