"""A site of a Flower federation: answers the server's messages with its own data.

Flower starts a fresh process for every message a site receives, so a site rebuilds its
client from the run's config each time, and everything that must outlive a round
(optimiser moments, FedBN's local layers, MOON's previous model, HarmoFL's amplitudes, the
loader's random streams) lives in the site's state folder, never on the server:
``<state_dir>/<run key>/round-NNNNN.pt``, one file per round the site trained in, written
atomically. Training in round ``r`` starts from the newest state before ``r``, so a
round the server repeats after a restart is trained again from the same state. Files older
than the server's last saved round are removed.

What the site takes from the server: the method, model, training and evaluation settings.
What it never takes: where its data are (``data-root``), which site it is (``site``),
where its state goes, what code to import, which device to use.

Examples
--------
>>> site = Site({"site": "site1", "state-dir": "/tmp/fedbcs-doc-site"})
>>> site.name
'site1'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import RecordDict

from fedbcs_lightning.config import Config, ConfigError, from_dict
from fedbcs_lightning.data import DataError
from fedbcs_lightning.flower.records import (
    decode_instruction,
    encode_reply,
    encode_update,
    library_version,
)
from fedbcs_lightning.io import atomic_torch_save, load_checkpoint

#: Keys of a SuperNode's ``--node-config`` a site reads.
NODE_KEYS = ("site", "data-root", "state-dir", "accelerator", "imports")
_STATE = re.compile(r"round-(\d+)\.pt$")


class Site:
    """One site, configured by its SuperNode's node config (see :data:`NODE_KEYS`)."""

    def __init__(self, node_config: Mapping[str, Any]) -> None:
        if not node_config.get("site"):
            raise ConfigError('the node config needs site="NAME" (this site\'s name)')
        self.name = str(node_config["site"])
        self.data_root = str(node_config.get("data-root") or "") or None
        self.state_dir = Path(str(node_config.get("state-dir") or "fedbcs-state")).expanduser()
        self.accelerator = str(node_config.get("accelerator") or "") or None
        self.imports = [m for m in str(node_config.get("imports") or "").split(",") if m]

    def handle(self, content: RecordDict) -> RecordDict:
        """Answer one message: ``describe`` (what the site holds), ``fit`` or ``evaluate``.
        A problem the site can explain (its data, the config) is a refusal the server
        logs, not a crash."""
        from fedbcs_lightning.federation.updates import RejectedUpdate

        header, instruction = decode_instruction(content)
        try:
            config = self.config(json.loads(header["config"]))
            kind = header["kind"]
            if kind == "describe":
                return encode_reply(self.describe(config))
            client = self.client(config)
            server_round = int(header["round"])
            run_dir = self.state_dir / run_key(header.get("run-key")) / _safe(self.name)
            if kind == "evaluate":
                self.restore(client, run_dir, before=server_round + 1)
                metrics = client.evaluate(instruction, header["split"], header["surface"])
                return encode_reply({"metrics": metrics})
            if kind != "fit":
                raise ConfigError(f"unknown request {kind!r}")
            self.restore(client, run_dir, before=server_round)
            try:
                update = client.fit(instruction)
            except RejectedUpdate as err:
                self.save(client, run_dir, server_round, int(header["keep-from"]))
                return encode_reply({"error": err.reason})
            self.save(client, run_dir, server_round, int(header["keep-from"]))
            return encode_update(update)
        except (ConfigError, DataError, ImportError) as err:
            return encode_reply({"error": f"site {self.name}: {err}"})

    def config(self, sent: dict[str, Any]) -> Config:
        """The server's config with this site's own data, device and code."""
        from fedbcs_lightning.registry import import_modules

        import_modules(self.imports)  # this site's own plugins; never code the server names
        if self.name in sent.get("data", {}).get("leave_out", []):
            raise ConfigError(f"the run keeps site {self.name!r} out of training")
        run = {"imports": self.imports, "loggers": [], "output": None}
        if self.accelerator:
            run["accelerator"] = self.accelerator
        data = {"root": self.data_root, "cache": None, "leave_out": []}
        sent = {**sent, "run": {**sent.get("run", {}), **run}}
        sent["data"] = {**sent.get("data", {}), **data}
        sent["train"] = {**sent.get("train", {}), "clients": None}
        return from_dict(sent)

    def data(self, config: Config):
        """This site's data: the data set as ``config`` names it, read from ``data-root``,
        narrowed to this site."""
        from fedbcs_lightning.data import config_splits, load_dataset

        data = load_dataset(config)
        names = [s.name for s in data.sites]
        if self.name not in names:
            where = f"under {self.data_root}" if self.data_root else "in it"
            raise DataError(
                f"data set {data.name!r} has no site {self.name!r} {where}; it has "
                f"{', '.join(names)}. Start the site with the name of its folder (--site)"
            )
        data = data.without([n for n in names if n != self.name])
        splits = config_splits(data, config)
        return data, splits

    def describe(self, config: Config) -> dict[str, Any]:
        from fedbcs_lightning.federation.build import describe_data

        data, splits = self.data(config)
        return {"site": self.name, "data": describe_data(data), "splits": splits[self.name],
                "version": library_version()}  # fmt: skip

    def client(self, config: Config):
        from fedbcs_lightning.federation.build import build_clients, check_setup
        from fedbcs_lightning.methods import create_strategy

        check_setup(config)
        data, splits = self.data(config)
        strategy = create_strategy(config)
        if strategy.pools_training_data:
            raise ConfigError(f"method {config.train.method!r} needs all data in one place")
        (client,) = build_clients(config, data, splits, strategy)
        return client

    @staticmethod
    def states(run_dir: Path) -> dict[int, Path]:
        if not run_dir.is_dir():
            return {}
        found = (_STATE.search(p.name) for p in run_dir.iterdir())
        return {int(m.group(1)): run_dir / m.group(0) for m in found if m}

    def restore(self, client: Any, run_dir: Path, before: int) -> None:
        """Load the newest state saved before round ``before`` (none: a fresh client)."""
        earlier = [r for r in self.states(run_dir) if r < before]
        if earlier:
            saved = load_checkpoint(run_dir / f"round-{max(earlier):05d}.pt")
            client.load_state_dict(saved["client"])

    def save(self, client: Any, run_dir: Path, server_round: int, keep_from: int) -> None:
        """Save the state after ``server_round``; drop states the server can no longer ask
        for (older than the newest one at or before its last saved round ``keep_from``)."""
        state = client.state_dict()  # the weights are stored once: torch.save shares them
        path = run_dir / f"round-{server_round:05d}.pt"
        atomic_torch_save(path, {"state_dict": state["weights"], "client": state}, checksums=False)
        states = self.states(run_dir)
        kept = [r for r in states if r <= keep_from]
        floor = max(kept) if kept else 0
        for r, path in states.items():
            if r < floor:
                path.unlink(missing_ok=True)


_RUN_KEY = re.compile(r"[0-9a-f]{32}")


def run_key(value: Any) -> str:
    """The run key the server sent, checked: it names a folder under the site's state
    folder, so anything but the 32 hex digits a server draws is refused (a site never
    takes a path from the server)."""
    if not isinstance(value, str) or not _RUN_KEY.fullmatch(value):
        raise ConfigError(
            f"the server sent run key {str(value)[:80]!r}, not 32 hex digits; refused (it "
            "would name a folder outside this site's --state-dir)"
        )
    return value


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
