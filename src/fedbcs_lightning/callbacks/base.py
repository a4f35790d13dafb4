"""Federated callbacks: side concerns (logging, checkpoints, progress) hook into the loop."""

from __future__ import annotations

from typing import Any


class FederatedCallback:
    """Every hook is a no-op; override the ones you need.

    Examples
    --------
    >>> class PrintRounds(FederatedCallback):
    ...     def on_round_end(self, trainer, server_round, record):
    ...         if "val" in record:  # rounds that validated (run.eval_every)
    ...             print(server_round, record["val"]["mean"]["dice"])
    """

    #: Run after every other callback at each hook (the checkpoint writer sets it, so a
    #: saved round is one the others have recorded).
    runs_last = False

    def on_fit_start(self, trainer: Any) -> None:
        """Before the first round."""

    def on_round_start(self, trainer: Any, server_round: int) -> None:
        """At the start of a round (1-based)."""

    def on_client_fit_start(self, trainer: Any, server_round: int, client: str) -> None:
        """Before one client's local training."""

    def on_client_fit_end(self, trainer: Any, server_round: int, update: Any) -> None:
        """After one client's local training, with its :class:`ClientUpdate`."""

    def on_update_rejected(self, trainer: Any, server_round: int, client: str, reason: str) -> None:
        """A client's update was left out of the round (its training diverged, or the
        update failed the server's checks); ``reason`` says why."""

    def on_aggregate_end(self, trainer: Any, server_round: int, metrics: dict[str, Any]) -> None:
        """After the strategy aggregated the round's updates."""

    def on_round_end(self, trainer: Any, server_round: int, record: dict[str, Any]) -> None:
        """At the end of a round; ``record`` holds the round's losses, the server's
        metrics and, in rounds that validate (``run.eval_every``), ``val``: per-site and
        mean validation metrics."""

    def on_site_evaluated(self, trainer: Any, split: str, site: str) -> None:
        """After one site's model was scored on ``split`` (``val`` each round, ``test`` at
        the end)."""

    def on_test_start(self, trainer: Any) -> None:
        """After the last round, before the selected and the last model are tested."""

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        """After the final test evaluation, with the :class:`FitResult`."""

    def on_exception(self, trainer: Any, error: BaseException) -> None:
        """The fit is ending with ``error`` (Ctrl-C included); release what you hold."""

    @property
    def state_key(self) -> str:
        """The name :meth:`state_dict` is saved under in resumable checkpoints: the class
        name by default; two instances of one class with state each need their own
        (e.g. ``f"{type(self).__name__}[{self.folder}]"``)."""
        return type(self).__name__

    def state_dict(self) -> dict[str, Any]:
        """What this callback needs to continue a resumed run (kept in checkpoints under
        :attr:`state_key`; e.g. a logger's run id)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; called before ``on_fit_start``."""
