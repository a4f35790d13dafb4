"""The server of a Flower federation: the same loop, strategies, validation, callbacks
and run directory as in-process; only the clients are sites on other machines.

:class:`FlowerEngine` is the ``engine`` :func:`fedbcs_lightning.api.fit` and
:func:`~fedbcs_lightning.api.resume` take: it waits for the sites, asks each what it holds
(data set, classes, channels, split sizes; never images or file names), builds the initial
model as the in-process run would, and hands the loop a :class:`RemoteClients` engine
that sends each round's instructions to the sites and brings their replies back. A site
that does not answer in time (killed, disconnected) is a dropout of that round, recorded
like a rejected update; it takes part again once its SuperNode reconnects.

A transport delivers messages: :class:`GridTransport` over a Flower ``Grid`` (inside the
ServerApp); tests use one that calls :class:`~fedbcs_lightning.flower.site.Site` directly.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

from flwr.app import RecordDict

from fedbcs_lightning.config import Config, ConfigError
from fedbcs_lightning.federation.engine import Setup
from fedbcs_lightning.federation.updates import FederationStopped, RejectedUpdate
from fedbcs_lightning.flower.records import (
    MalformedReply,
    decode_reply,
    decode_update,
    encode_instruction,
    library_version,
    refusal,
)
from fedbcs_lightning.flower.roster import DATA_KEYS, Roster, Transport, log, short
from fedbcs_lightning.methods.base import ClientUpdate, Instruction


class GridTransport:
    """Messages through a Flower ``Grid`` (the ServerApp's connection to the SuperLink)."""

    def __init__(self, grid: Any) -> None:
        self.grid = grid

    def node_ids(self) -> list[int]:
        return sorted(self.grid.get_node_ids())

    def send(
        self, contents: dict[int, RecordDict], kind: str, timeout: float
    ) -> dict[int, RecordDict | str]:
        from flwr.app import Message, MessageType

        message_type = {
            "describe": MessageType.QUERY,
            "fit": MessageType.TRAIN,
            "evaluate": MessageType.EVALUATE,
        }[kind]
        messages = [
            Message(content, dst_node_id=node, message_type=message_type)
            for node, content in contents.items()
        ]
        start = time.monotonic()
        replies = exchange(self.grid, messages, timeout)
        waited = time.monotonic() - start
        silent = (
            f"no reply within {timeout:g} s"
            if waited >= timeout
            else f"no reply (the site went offline; noticed after {waited:.0f} s)"
        )
        out: dict[int, RecordDict | str] = dict.fromkeys(contents, silent)
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                out[node] = f"error {reply.error.code}: {reply.error.reason}"
            else:
                out[node] = reply.content
        return out


def exchange(grid: Any, messages: list, timeout: float, longest_pause: float = 1.0) -> list:
    """Push ``messages`` and pull their replies until all came back or ``timeout`` passed.

    Flower's ``Grid.send_and_receive`` sleeps 3 s between pulls, so a round's replies wait
    up to 3 s after the last site answered; here the pause starts at 50 ms and doubles up
    to ``longest_pause`` (a pull is one small request to the SuperLink).
    """
    pending = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    replies, pause = [], 0.05
    while pending:
        got = list(grid.pull_messages(pending))
        replies += got
        pending -= {reply.metadata.reply_to_message_id for reply in got}
        left = deadline - time.monotonic()
        if not pending or left <= 0:
            break
        time.sleep(min(pause, left))
        pause = min(2 * pause, longest_pause)
    return replies


class RemoteSite:
    """A site as the server sees it: a name (its data stay on its machine)."""

    def __init__(self, name: str) -> None:
        self.name = name


class RemoteClients:
    """The loop's :class:`~fedbcs_lightning.federation.engine.Clients` for sites reached
    through a :class:`Transport`. Site state stays on the sites; the server
    keeps only the run's key, which names that state on every site."""

    local = False

    def __init__(
        self,
        transport: Transport,
        roster: Roster,
        names: list[str],
        config: Config,
        round_timeout: float,
        say: Callable[[str], None] = log,
    ) -> None:
        self.transport = transport
        self.roster = roster
        self.clients = {name: RemoteSite(name) for name in sorted(names)}
        self.config_json = json.dumps(config.to_dict())
        self.checkpoint_every = config.run.checkpoint_every
        self.round_timeout = round_timeout
        self.say = say
        self.run_key = uuid.uuid4().hex
        self.server_round = 0

    def header(self, kind: str, server_round: int, **extra: Any) -> dict[str, Any]:
        last_saved = (server_round - 1) // self.checkpoint_every * self.checkpoint_every
        return {
            "kind": kind,
            "round": server_round,
            "run-key": self.run_key,
            "keep-from": last_saved,
            "config": self.config_json,
            **extra,
        }

    def refresh(self) -> None:
        """Forget sites that left; take back sites that came again (from this round on)."""
        header = self.header("describe", self.server_round)
        for name in self.roster.refresh(header, self.round_timeout, set(self.clients)):
            self.say(f"site {name} joined again")

    def _send(self, kind: str, instructions: dict[str, Instruction], **extra: Any):
        if not instructions:
            return {}
        server_round = next(iter(instructions.values())).server_round
        self.server_round = server_round
        self.refresh()
        header = self.header(kind, server_round, **extra)
        nodes = {name: self.roster.node_of(name) for name in instructions}
        contents = {
            node: encode_instruction(instructions[name], header)
            for name, node in nodes.items()
            if node is not None
        }
        replies = self.transport.send(contents, kind, self.round_timeout)
        out: dict[str, RecordDict | str] = {}
        for name, node in nodes.items():
            if node is None:
                out[name] = "dropped out: not connected"
                continue
            reply = replies.get(node, "no reply")
            if isinstance(reply, str):
                out[name] = f"dropped out: {short(reply)}"
                continue
            out[name] = refusal(reply) or reply
        return out

    def fit(
        self, instructions: dict[str, Instruction], started: Callable[[str], None]
    ) -> Iterator[tuple[str, ClientUpdate | RejectedUpdate]]:
        for name in instructions:
            started(name)
        for name, reply in self._send("fit", instructions).items():
            if isinstance(reply, str):
                yield name, RejectedUpdate(name, reply)
                continue
            try:
                update = decode_update(reply)
            except MalformedReply as err:
                yield name, RejectedUpdate(name, f"malformed reply: {err}")
                continue
            if update.client != name:
                yield name, RejectedUpdate(name, f"the reply names site {update.client!r}")
                continue
            yield name, update

    def evaluate(
        self,
        instructions: dict[str, Instruction],
        split: str,
        surface_metrics: bool,
        done: Callable[[str], None],
    ) -> dict[str, dict[str, float]]:
        per_site = {}
        replies = self._send("evaluate", instructions, split=split, surface=surface_metrics)
        for name, reply in replies.items():
            if isinstance(reply, str):
                self.say(f"site {name}: no {split} metrics this round ({reply})")
                continue
            try:
                per_site[name] = _metrics(reply)
            except MalformedReply as err:
                self.say(f"site {name}: no {split} metrics this round (malformed reply: {err})")
                continue
            done(name)
        return per_site

    def state_dict(self) -> dict[str, Any]:
        return {"run_key": self.run_key}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "run_key" not in state:
            raise ValueError("the checkpoint was written by an in-process run, not on Flower")
        self.run_key = state["run_key"]


def _metrics(reply: RecordDict) -> dict[str, float]:
    metrics = decode_reply(reply).get("metrics")
    if not isinstance(metrics, dict):
        raise MalformedReply("it holds no metrics")
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MalformedReply(f"metric {key!r} is not a number")
        out[str(key)] = float(value)
    return out


class FlowerEngine:
    """The :class:`~fedbcs_lightning.federation.engine.Engine` of the sites connected to
    the SuperLink (see :meth:`prepare`); pass it as ``engine`` to
    :func:`fedbcs_lightning.api.fit`.

    ``site_nodes`` binds each site's name to the node ID of its registered key (site
    authentication, ``fedbcs serve --site-key NAME=FILE``): a node may then only be the
    site its key was registered for.
    """

    resume_command = "fedbcs serve --resume"

    def __init__(
        self,
        transport: Transport,
        say: Callable[[str], None] = log,
        site_nodes: dict[str, int] | None = None,
    ) -> None:
        self.transport = transport
        self.say = say
        self.roster = Roster(transport, site_nodes, say)

    def prepare(self, config: Config) -> Setup:
        from fedbcs_lightning.config import merge
        from fedbcs_lightning.federation.build import build_backbone, check_setup
        from fedbcs_lightning.methods import create_strategy

        strategy = create_strategy(config)
        if strategy.pools_training_data:
            raise ConfigError(
                f"method {config.train.method!r} trains on all sites' images in one place, "
                "which a federation across machines exists to avoid; use it in-process"
            )
        if config.train.clients is not None:
            raise ConfigError(
                "train.clients: on Flower the sites that join are the clients; leave it unset"
            )
        check_setup(merge(config, {"run": {"accelerator": "cpu"}}))  # devices are the sites'
        described = self.wait_for_sites(config)
        if len(described) < config.server.min_clients:
            raise FederationStopped(
                f"{len(described)} site(s) joined within server.join_timeout="
                f"{config.server.join_timeout:g} s, fewer than server.min_clients="
                f"{config.server.min_clients}"
            )
        info = _common_data(described)
        splits = {name: d["splits"] for name, d in sorted(described.items())}
        import lightning as L

        L.seed_everything(config.run.seed, verbose=False)
        shape = SimpleNamespace(
            in_channels=info["in_channels"], num_classes=len(info["class_names"])
        )
        template = strategy.configure_backbone(build_backbone(config, shape))
        weights = {k: v.detach().clone() for k, v in template.state_dict().items()}
        clients = RemoteClients(
            self.transport, self.roster, list(described), config,
            config.server.round_timeout, self.say,
        )  # fmt: skip
        self.say(f"sites: {', '.join(sorted(described))}")
        return Setup(strategy, clients, weights, info, splits, None)

    def wait_for_sites(self, config: Config) -> dict[str, dict]:
        """Ask every node that connects which site it is until ``server.sites`` distinct
        sites (default ``server.min_clients``) have joined, or ``server.join_timeout``."""
        wanted = config.server.sites or config.server.min_clients
        deadline = time.monotonic() + config.server.join_timeout
        self.say(
            f"waiting for {wanted} site(s) (server.join_timeout={config.server.join_timeout:g} s)"
        )
        header = {
            "kind": "describe",
            "round": 0,
            "run-key": "",
            "keep-from": 0,
            "config": json.dumps(config.to_dict()),
        }
        described: dict[str, dict] = {}
        while True:
            for name, answer in self.roster.refresh(header, config.server.round_timeout).items():
                described[name] = answer
                theirs, ours = answer.get("version"), library_version()
                if theirs != ours:
                    self.say(f"site {name} runs fedbcs-lightning {theirs}, the server {ours}: "
                             "install the same version everywhere")  # fmt: skip
            described = {n: d for n, d in described.items() if self.roster.node_of(n) is not None}
            if len(described) >= wanted or time.monotonic() > deadline:
                return described
            time.sleep(1.0)


def _common_data(described: dict[str, dict]) -> dict[str, Any]:
    """The data description every site shares (classes, channels, ...), or an error
    naming the sites that differ."""
    keys = DATA_KEYS
    first_name, first = next(iter(sorted(described.items())))
    for name, d in described.items():
        for key in keys:
            if d["data"][key] != first["data"][key]:
                raise ConfigError(
                    f"sites disagree on the data's {key}: {first_name} has "
                    f"{first['data'][key]!r}, {name} has {d['data'][key]!r}"
                )
    return {**{k: first["data"][k] for k in keys}, "sites": sorted(described)}
