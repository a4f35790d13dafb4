"""Built-in callbacks: metrics file, checkpoints, progress display."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fedbcs_lightning.callbacks.base import FederatedCallback
from fedbcs_lightning.io import atomic_torch_save, atomic_write_json, atomic_write_text


class MetricsWriter(FederatedCallback):
    """Appends one JSON line per (round, site) to ``metrics.jsonl``.

    Each line: ``{"round", "split", "site", "dice", "dice/<region>", ...}``; the site
    ``"mean"`` holds the mean over sites, and training losses are on the
    ``"split": "train"`` lines. An update the server left out is a ``"split": "rejected"``
    line with its ``"reason"``.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.resume_round: int | None = None
        self.last_round = 0

    def on_fit_start(self, trainer: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.resume_round is None:
            self.path.write_text("")
            return
        # Resumed: keep the rows up to the checkpoint's round, drop any written after it.
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line and json.loads(line)["round"] <= self.resume_round
        ]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def state_dict(self) -> dict[str, Any]:
        return {"round": self.last_round}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.resume_round = state["round"]

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self.path.open("a") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")

    def on_round_end(self, trainer: Any, server_round: int, record: dict[str, Any]) -> None:
        rows = [
            {"round": server_round, "split": "train", "site": site, **metrics}
            for site, metrics in record["train"].items()
        ]
        if "val" in record:  # validated rounds (run.eval_every)
            sites = {**record["val"]["sites"], "mean": record["val"]["mean"]}
            rows += [
                {"round": server_round, "split": "val", "site": site, **metrics}
                for site, metrics in sites.items()
            ]
        if record["aggregate"]:
            rows.append({"round": server_round, "split": "server", **record["aggregate"]})
        rows += [
            {"round": server_round, "split": "rejected", "site": site, "reason": reason}
            for site, reason in record.get("rejected", {}).items()
        ]
        self._write(rows)
        self.last_round = server_round


class CheckpointWriter(FederatedCallback):
    """Writes ``checkpoints/state.pt`` (everything needed to resume: see
    :meth:`FederatedTrainer.state_dict`) every ``every`` rounds and after the last, and at
    the end the global weights as ``checkpoints/last.pt`` and ``selected.pt`` (the round
    chosen on validation), then ``summary.json`` (the test metrics of both). Every
    checkpoint holds the resolved config, the data set's description and the library
    versions. Writes are atomic.

    With ``background`` (the default), ``state.pt`` is written in the background: the
    state is copied when the round ends and serialised while the next round trains (one
    write at a time; a failed write is raised at the next one or at the end). The fit's
    end, and any exception ending it, waits for the write in flight, so a stopped run
    keeps its last saved round. ``background=False`` writes before the next round starts.

    It runs after every other callback (``runs_last``): a round in ``state.pt`` has been
    recorded by every logger, and ``summary.json``, written last, marks a finished run.
    """

    runs_last = True

    def __init__(
        self,
        run_dir: str | Path,
        config: dict[str, Any],
        data_info: dict[str, Any],
        every: int = 1,
        background: bool = True,
    ) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.config = config
        self.data_info = data_info
        self.every = every
        self.background = background
        self._writing: threading.Thread | None = None
        self._failure: BaseException | None = None

    def _metadata(self) -> dict[str, Any]:
        return {"config": self.config, "data": self.data_info, "versions": versions()}

    def _save(self, name: str, weights: Any, server_round: int) -> None:
        atomic_torch_save(
            self.dir / name, {"state_dict": weights, "round": server_round, **self._metadata()}
        )

    def on_round_end(self, trainer: Any, server_round: int, record: dict[str, Any]) -> None:
        if not (server_round % self.every == 0 or server_round == trainer.rounds):
            return
        state = trainer.state_dict()
        payload = {"state_dict": state["weights"], "trainer": state, **self._metadata()}
        self.wait()
        if not self.background:
            self._write_state(payload)
            self.wait()
            return
        # A copy: training goes on mutating the optimisers' moments and the history
        # (deepcopy keeps the tensors that are shared shared, so they are stored once).
        snapshot = copy.deepcopy(payload)
        self._writing = threading.Thread(
            target=self._write_state, args=(snapshot,), name="fedbcs-checkpoint"
        )
        self._writing.start()

    def _write_state(self, snapshot: dict[str, Any]) -> None:
        try:
            # rewritten every round and read back only by resume: no zip checksums
            atomic_torch_save(self.dir / "state.pt", snapshot, checksums=False)
        except BaseException as err:  # raised in the fit's thread by wait()
            self._failure = err

    def wait(self) -> None:
        """Block until the state being written is on disk; raise what its write raised."""
        if self._writing is not None:
            self._writing.join()
            self._writing = None
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def on_exception(self, trainer: Any, error: BaseException) -> None:
        with contextlib.suppress(Exception):  # the error ending the fit is the one to report
            self.wait()

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        from fedbcs_lightning.evaluation.metrics import mean_over_sites

        self.wait()

        self._save("last.pt", result.last_weights, trainer.server_round)
        self._save("selected.pt", result.selected_weights, result.best_round)
        summary = {
            "best_round": result.best_round,
            "rounds": trainer.rounds,
            "class_names": self.data_info.get("class_names"),
        }
        for key, per_site in (
            ("test_selected", result.test_selected),
            ("test_last", result.test_last),
        ):
            summary[key] = {"sites": per_site, "mean": mean_over_sites(per_site)}
        atomic_write_json(self.dir.parent / "summary.json", summary)


def versions() -> dict[str, str]:
    """Versions of the libraries that shape a run's numbers."""
    return dict(_installed_versions())


@functools.cache
def _installed_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("fedbcs-lightning", "torch", "lightning", "segmentation-models-pytorch"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


class RoundProgress(FederatedCallback):
    """What the run is doing, as it happens: a line when it starts, one per round with the
    losses, mean validation Dice and an ETA, and the final test site by site. On a
    terminal a live rich bar over rounds and clients (or test sites) replaces Lightning's
    bars. Counts and ETA hold for resumed runs (they count the rounds of this process)."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._progress = None

    def _print(self, line: str) -> None:
        if self._progress:
            self._progress.console.print(line, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def on_fit_start(self, trainer: Any) -> None:
        self.start = time.perf_counter()
        self.first_round = trainer.server_round  # rounds done before this process
        sites = len(trainer.clients)
        if self.first_round >= trainer.rounds:
            self._print(f"all {trainer.rounds} rounds are done; finishing the run")
        elif self.first_round:
            self._print(
                f"resuming after round {self.first_round}: rounds {self.first_round + 1}-"
                f"{trainer.rounds} with {sites} clients"
            )
        else:
            self._print(f"training {sites} clients for {trainer.rounds} rounds")
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._progress.start()
            self._rounds = self._progress.add_task(
                "rounds", total=trainer.rounds, completed=self.first_round
            )
            self._clients = self._progress.add_task("clients", total=sites)

    def on_round_start(self, trainer: Any, server_round: int) -> None:
        if self._progress:
            self._progress.reset(self._clients, total=len(trainer.round_clients))

    def on_client_fit_end(self, trainer: Any, server_round: int, update: Any) -> None:
        if self._progress:
            self._progress.advance(self._clients)

    def on_update_rejected(self, trainer: Any, server_round: int, client: str, reason: str) -> None:
        self._print(f"round {server_round}: update of {client} rejected: {reason}")

    def on_round_end(self, trainer: Any, server_round: int, record: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - self.start
        done_here = server_round - self.first_round
        eta = elapsed / done_here * (trainer.rounds - server_round)
        losses = [m["loss/total"] for m in record["train"].values() if "loss/total" in m]
        # private sites upload no loss (it is a statistic of their images)
        trained = f"train loss {sum(losses) / len(losses):.4f}  " if losses else ""
        validated = (
            f"val dice {record['val']['mean']['dice']:.4f}  "
            if "val" in record
            else "(not validated)  "
        )
        line = (
            f"round {server_round}/{trainer.rounds}  "
            f"{trained}{validated}elapsed {elapsed:.0f}s  eta {eta:.0f}s"
        )
        if self._progress:
            self._progress.advance(self._rounds)
        self._print(line)

    def on_test_start(self, trainer: Any) -> None:
        models = (
            "the last round's model"
            if trainer.best_round == trainer.server_round
            else f"the model selected on validation (round {trainer.best_round}) and the last "
            "round's"
        )
        sites = len(trainer.clients)
        self._tests = (0, sites * (1 if trainer.best_round == trainer.server_round else 2))
        self._print(f"testing {models} on {sites} sites ...")
        if self._progress:
            self._progress.reset(self._clients, total=self._tests[1], description="testing")

    def on_site_evaluated(self, trainer: Any, split: str, site: str) -> None:
        if split != "test":
            return
        done, total = self._tests[0] + 1, self._tests[1]
        self._tests = (done, total)
        if self._progress:
            self._progress.advance(self._clients)
        else:
            self._print(f"  tested {site} ({done}/{total})")

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        self._stop()

    def on_exception(self, trainer: Any, error: BaseException) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._progress:
            self._progress.stop()
            self._progress = None


class PrivacyReport(FederatedCallback):
    """What the run's differential privacy spends (``privacy.*``): at the start, the
    epsilon each site (or, client-level, the server) will have spent after the last
    round; at the end, what was spent. Each round's figure is in the metrics
    (``privacy/epsilon``). Sites on other machines report their plan with their first
    update."""

    def __init__(self, delta: float, stream=None) -> None:
        self.delta = delta
        self.stream = stream or sys.stdout
        self.reported: set[str] = set()

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def on_fit_start(self, trainer: Any) -> None:
        from fedbcs_lightning.privacy.hooks import SamplePrivacy

        planned = {}
        if hasattr(trainer.strategy, "planned_epsilon"):
            planned["server (client-level)"] = trainer.strategy.planned_epsilon()
        for name, client in trainer.local_clients.items():
            for hook in client.module.hooks:
                if isinstance(hook, SamplePrivacy):
                    planned[name] = hook.planned_epsilon()
        self.reported |= set(planned)
        if planned:
            self._print(f"privacy: planned epsilon at delta={self.delta:g} {_figures(planned)}")

    def on_client_fit_end(self, trainer: Any, server_round: int, update: Any) -> None:
        from fedbcs_lightning.privacy.hooks import PLANNED

        if update.client not in self.reported and PLANNED in update.metrics:
            self.reported.add(update.client)
            self._print(
                f"privacy: {update.client} plans epsilon {update.metrics[PLANNED]:.2f} at "
                f"delta={self.delta:g}"
            )

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        from fedbcs_lightning.privacy.hooks import EPSILON

        spent = {}
        for record in result.history:
            for name, metrics in record.get("train", {}).items():
                if EPSILON in metrics:
                    spent[name] = metrics[EPSILON]
            if EPSILON in record.get("aggregate", {}):
                spent["server (client-level)"] = record["aggregate"][EPSILON]
        if spent:
            self._print(f"privacy: spent epsilon at delta={self.delta:g} {_figures(spent)}")


def _figures(values: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in values.items())
