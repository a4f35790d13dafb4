"""High-level entry points: build a federation from a config and train it.

Examples
--------
>>> from fedbcs_lightning.config import resolve
>>> from fedbcs_lightning.api import fit
>>> cfg = resolve(options={"train": {"rounds": 1, "clients": 2}, "data": {"image_size": 32}})
>>> run = fit(cfg, run_dir="/tmp/fedbcs-doc-run", progress=False)  # doctest: +SKIP
>>> print(run.summary_table())  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fedbcs_lightning.config import Config, ConfigError, from_dict, merge, save
from fedbcs_lightning.data import FederatedData, config_splits, load_dataset
from fedbcs_lightning.federation.updates import FederationStopped
from fedbcs_lightning.io import atomic_write_json, load_checkpoint
from fedbcs_lightning.rundir import (
    check_new_run_dir,
    clear_run_files,
    lock_run_dir,
    mark_run_dir,
)

if TYPE_CHECKING:  # torch and Lightning load once a federation is built, not before
    from fedbcs_lightning.callbacks import FederatedCallback
    from fedbcs_lightning.federation.engine import Engine, Setup
    from fedbcs_lightning.federation.trainer import FederatedTrainer, FitResult

__all__ = [
    "InProcess",
    "ResumeError",
    "RunResult",
    "fit",
    "format_summary",
    "resume",
]


def default_run_dir(config: Config) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.data.name}-{config.train.method}-{stamp}"


@dataclass
class RunResult:
    config: Config
    data: FederatedData | None  # None when the sites' data stayed on their machines
    run_dir: Path
    result: FitResult
    data_info: dict = field(default_factory=dict)  # what checkpoints record about the data

    def summary_table(self) -> str:
        return format_summary(self.result, list(self.data_info["regions"]))


class InProcess:
    """The default engine: every site's data and client in this process."""

    def prepare(self, config: Config) -> Setup:
        """Read the data (a data error is reported before torch is imported), then build
        the strategy and one client per site."""
        data, splits = _data(config)
        from fedbcs_lightning.federation.build import build_clients, check_setup, describe_data
        from fedbcs_lightning.federation.engine import Setup
        from fedbcs_lightning.methods import create_strategy

        check_setup(config)
        strategy = create_strategy(config)
        clients = build_clients(config, data, splits, strategy)
        if config.server.min_clients > len(clients):
            raise ConfigError(
                f"server.min_clients: {config.server.min_clients} but the federation has "
                f"{len(clients)} clients"
            )
        weights = clients[0].get_weights()
        return Setup(strategy, clients, weights, describe_data(data), splits, data)


def fit(
    config: Config,
    run_dir: str | Path | None = None,
    callbacks: list[FederatedCallback] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    engine: Engine | None = None,
) -> RunResult:
    """Train a federation as ``config`` says; write the run directory; return the results.

    The run directory holds ``config.yaml`` (resolved), ``splits.json``, ``metrics.jsonl``,
    ``summary.json``, ``checkpoints/{last,selected}.pt``, ``checkpoints/state.pt`` (to
    resume, see :func:`resume`) and ``plots/`` (validation Dice curves, prediction
    overlays), plus what the loggers of ``run.loggers`` write (``metrics.csv``,
    ``tensorboard/``, ``wandb/``).

    The folder must be new or empty (``overwrite`` replaces an earlier run's files); it is
    locked while the run lasts (:mod:`fedbcs_lightning.rundir`). The data are loaded before
    anything is written, and a run that fails before its first round is saved leaves no
    folder behind (unless the folder existed before).

    ``engine`` says where the clients run: :class:`InProcess` (the default) or, for
    sites on other machines, :class:`fedbcs_lightning.flower.server.FlowerEngine`.
    """
    run_dir = Path(run_dir or config.run.output or default_run_dir(config))
    check_new_run_dir(run_dir, overwrite)
    config = with_absolute_paths(config)
    setup = (engine or InProcess()).prepare(config)
    created = not run_dir.exists()
    with lock_run_dir(run_dir):
        check_new_run_dir(run_dir, overwrite)  # again, now that no one else can write
        if overwrite:
            clear_run_files(run_dir)
        try:
            mark_run_dir(run_dir)
            save(config, run_dir / "config.yaml")
            atomic_write_json(run_dir / "splits.json", setup.splits)
            trainer = _trainer(config, setup, run_dir, callbacks, progress)
            result = trainer.fit(setup.initial_weights)
        except BaseException as err:
            saved = (run_dir / "checkpoints" / "state.pt").exists()
            if not saved:
                _remove_stub(run_dir, created)
            if isinstance(err, FederationStopped):
                raise FederationStopped(f"{err}\n{_stopped(run_dir, saved, engine)}") from None
            raise
    return RunResult(config, setup.data, run_dir, result, setup.data_info)


def _stopped(run_dir: Path, saved: bool, engine: Engine | None) -> str:
    if not saved:
        return "The run stopped before any round was saved; nothing was kept."
    command = getattr(engine, "resume_command", "fedbcs fit --resume")
    return (
        f"The run stopped; its rounds so far are saved in {run_dir}. Once the cause is gone "
        f"(a site's data fixed, enough sites back), continue it: {command} {run_dir}. "
        "Training that diverged needs a new run with a lower --lr."
    )


def with_absolute_paths(config: Config) -> Config:
    """``data.root`` and ``data.cache`` as absolute paths, so that a saved config works
    from any working folder (``--resume``, ``fedbcs evaluate``)."""
    updates = {
        key: str(Path(value).expanduser().resolve())
        for key, value in (("root", config.data.root), ("cache", config.data.cache))
        if value
    }
    return merge(config, {"data": updates}) if updates else config


def _remove_stub(run_dir: Path, created: bool) -> None:
    """Remove what a failed start wrote (the whole folder if this run created it)."""
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        clear_run_files(run_dir)


class ResumeError(Exception):
    """A run directory cannot be resumed (the message says why)."""


def resume(
    run_dir: str | Path,
    rounds: int | None = None,
    callbacks: list[FederatedCallback] | None = None,
    progress: bool = True,
    engine: Engine | None = None,
) -> RunResult:
    """Continue the run in ``run_dir`` from its last saved round (``checkpoints/state.pt``).

    The federation is rebuilt from the saved config; weights, every client's local state
    (optimiser, local layers, method state), the strategy's state, the history and all
    random generators are restored, so on CPU the result is bitwise identical to a run
    that was never interrupted. ``rounds`` extends (or sets) the total number of rounds.
    A run whose rounds are all done but whose final test and checkpoints were not written
    (it was stopped in between) is finished: only that part runs.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResumeError(f"{run_dir} cannot be resumed: no such folder")
    if rounds is not None and rounds < 1:
        raise ResumeError(f"--rounds must be at least 1, got {rounds}")
    with lock_run_dir(run_dir):
        checkpoint = _resumable_state(run_dir)
        config = from_dict(checkpoint["config"])
        done = checkpoint["trainer"]["round"]
        if rounds is not None:
            config = merge(config, {"train": {"rounds": rounds}})
        if done > config.train.rounds or (done == config.train.rounds and _finished(run_dir, done)):
            raise ResumeError(
                f"{run_dir} already finished round {done} of {config.train.rounds}; "
                "pass more rounds to train longer"
            )
        setup = (engine or InProcess()).prepare(config)
        saved_splits = run_dir / "splits.json"
        if saved_splits.is_file() and json.loads(saved_splits.read_text()) != setup.splits:
            raise ResumeError(
                f"the data set's splits differ from {saved_splits}: the data changed since the "
                "run started"
            )
        save(config, run_dir / "config.yaml")
        trainer = _trainer(config, setup, run_dir, callbacks, progress)
        trainer.load_state_dict(checkpoint["trainer"])
        try:
            result = trainer.fit(setup.initial_weights)
        except FederationStopped as err:
            raise FederationStopped(f"{err}\n{_stopped(run_dir, True, engine)}") from None
    return RunResult(config, setup.data, run_dir, result, setup.data_info)


def _resumable_state(run_dir: Path) -> dict:
    path = run_dir / "checkpoints" / "state.pt"
    if not path.is_file():
        raise ResumeError(
            f"{run_dir} cannot be resumed: {path} does not exist (it is written after each "
            "run.checkpoint_every rounds)"
        )
    try:
        checkpoint = load_checkpoint(path)
    except ValueError as err:
        raise ResumeError(str(err)) from None
    if "trainer" not in checkpoint:
        raise ResumeError(f"{path} holds weights only, not a resumable training state")
    return checkpoint


def _finished(run_dir: Path, done: int) -> bool:
    """The run's final phase (test, ``last.pt``, ``selected.pt``, ``summary.json``, the
    last file written) completed after round ``done``."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and summary.get("rounds") == done


def _data(config: Config) -> tuple[FederatedData, dict]:
    data = load_dataset(config)
    splits = config_splits(data, config)
    return data, splits


def _trainer(
    config: Config,
    setup: Setup,
    run_dir: Path,
    callbacks: list[FederatedCallback] | None,
    progress: bool,
) -> FederatedTrainer:
    from fedbcs_lightning.callbacks import (
        CheckpointWriter,
        MetricsWriter,
        PrivacyReport,
        RoundProgress,
    )
    from fedbcs_lightning.callbacks.loggers import create_loggers
    from fedbcs_lightning.callbacks.plots import PlotWriter
    from fedbcs_lightning.federation.trainer import FederatedTrainer
    from fedbcs_lightning.federation.updates import UpdateValidator

    class_names = setup.data_info["class_names"]
    all_callbacks = [
        MetricsWriter(run_dir),
        CheckpointWriter(
            run_dir,
            config.to_dict(),
            setup.data_info,
            config.run.checkpoint_every,
            # Flower sites drop their states older than the server's last saved round,
            # which must then be on disk: the server writes before the next round
            background=getattr(setup.clients, "local", True),
        ),
    ]
    if progress:
        all_callbacks.append(RoundProgress())
        if config.privacy.mode != "off":
            all_callbacks.append(PrivacyReport(config.privacy.delta))
    all_callbacks.append(PlotWriter(run_dir, class_names, config.run.log_images))
    all_callbacks += create_loggers(
        config.run.loggers, run_dir, config.to_dict(), class_names, config.run.log_images
    )
    all_callbacks += list(callbacks or [])
    return FederatedTrainer(
        setup.clients,
        setup.strategy,
        config.train.rounds,
        all_callbacks,
        validator=UpdateValidator(setup.initial_weights, config.server.max_update_norm),
        min_clients=config.server.min_clients,
        eval_every=config.run.eval_every,
    )


def format_summary(result: FitResult, regions: list[str]) -> str:
    """Per-site, per-region test Dice (and HD95) for the selected and the last round."""
    from fedbcs_lightning.evaluation.metrics import mean_over_sites

    lines = []
    for title, per_site in (
        (f"test, model selected on validation (round {result.best_round})", result.test_selected),
        (f"test, last round ({len(result.history)})", result.test_last),
    ):
        rows = {**per_site, "mean": mean_over_sites(per_site)}
        keys = [f"dice/{r}" for r in regions] + ["dice", "hd95", "assd"]
        if any("vcdr_error" in m for m in per_site.values()):
            keys.append("vcdr_error")  # fundus: vertical cup-to-disc ratio error
        headers = ["site"] + [k.replace("dice/", "dice ") for k in keys]
        widths = [max(8, *(len(n) for n in rows))] + [max(9, len(h)) for h in headers[1:]]
        lines.append(title)
        lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
        for name, metrics in rows.items():
            cells = [name] + [_fmt(metrics.get(k, math.nan)) for k in keys]
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
        lines.append("")
    return "\n".join(lines).rstrip()


def _fmt(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.4f}"  # none: e.g. HD95 of no region
