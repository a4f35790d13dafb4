"""The plots of a run, drawn once at the end of a fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedbcs_lightning.callbacks.base import FederatedCallback


class PlotWriter(FederatedCallback):
    """Writes ``plots/dice_curves.png`` (validation Dice per site over rounds, from
    ``metrics.jsonl``) and ``plots/overlays.png`` (the first ``num_images`` validation
    images of every site: image, ground truth and the prediction of the model selected on
    validation) at the end of a fit. Place it after :class:`MetricsWriter`."""

    def __init__(
        self, run_dir: str | Path, class_names: list[str] | None = None, num_images: int = 4
    ) -> None:
        self.run_dir = Path(run_dir)
        self.class_names = class_names
        self.num_images = num_images

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        from fedbcs_lightning.reporting.plots import (
            OVERLAYS,
            PLOTS_DIR,
            predict_samples,
            write_dice_curves,
            write_overlay_grid,
        )

        if (self.run_dir / "metrics.jsonl").is_file():
            write_dice_curves(self.run_dir)
        clients = trainer.local_clients  # a remote site's images never reach the server
        if not self.num_images or not clients:
            return
        names = list(clients)
        if result.selected_weights is not None:
            instructions = trainer.strategy.configure_evaluate(
                trainer.server_round, result.selected_weights, names
            )
            for name, instruction in instructions.items():
                clients[name].load(instruction)
            names = list(instructions)
        samples = {name: predict_samples(clients[name], self.num_images) for name in names}
        if any(samples.values()):
            write_overlay_grid(
                samples,
                self.run_dir / PLOTS_DIR / OVERLAYS,
                self.class_names,
                f"validation images; model selected on validation (round {result.best_round})",
            )
