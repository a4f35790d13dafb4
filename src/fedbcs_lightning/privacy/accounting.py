"""Privacy accounting: what a site has released and the epsilon it spends.

Every release is a sampled Gaussian mechanism: a noise multiplier (noise std over the
bound on one record's contribution), the probability that a record takes part, and how
often it ran. A :class:`PrivacyLedger` keeps these entries (plain numbers, so they live in
checkpoints and site state) and turns them into ``(epsilon, delta)`` with Opacus's
accountants (RDP or PRV); it never does its own accounting.

Examples
--------
>>> ledger = PrivacyLedger("rdp", delta=1e-5)
>>> ledger.record(noise_multiplier=1.0, sample_rate=0.1, steps=100)
>>> round(ledger.epsilon(), 2) == round(_opacus_epsilon("rdp", [(1.0, 0.1, 100)], 1e-5), 2)
True
"""

from __future__ import annotations

from typing import Any

Entry = tuple[float, float, int]


def _opacus_epsilon(kind: str, history: list[Entry], delta: float) -> float:
    from opacus.accountants import PRVAccountant, RDPAccountant

    if not history:
        return 0.0
    import numpy as np

    accountant = RDPAccountant() if kind == "rdp" else PRVAccountant()
    accountant.history = [tuple(entry) for entry in history]
    with np.errstate(divide="ignore"):  # PRV takes log(1 - q), -inf at q = 1, as meant
        return float(accountant.get_epsilon(delta=delta))


class PrivacyLedger:
    """The Gaussian releases of one site (or of the server), composed by Opacus.

    Composition does not depend on order, so entries with the same noise multiplier
    and sample rate are merged (the history stays short over hundreds of rounds).
    """

    def __init__(self, accountant: str = "rdp", delta: float = 1e-5) -> None:
        if accountant not in ("rdp", "prv"):
            raise ValueError(f"unknown accountant {accountant!r}; use rdp or prv")
        self.accountant, self.delta = accountant, delta
        self.history: list[Entry] = []

    def record(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """``steps`` runs of a Gaussian mechanism with this noise multiplier, each record
        taking part with probability ``sample_rate``."""
        if steps <= 0:
            return
        for i, (sigma, rate, count) in enumerate(self.history):
            if sigma == noise_multiplier and rate == sample_rate:
                self.history[i] = (sigma, rate, count + steps)
                return
        self.history.append((float(noise_multiplier), float(sample_rate), int(steps)))

    def epsilon(self, extra: list[Entry] | None = None) -> float:
        """Epsilon spent at ``delta`` (with ``extra`` releases: a plan)."""
        planned = PrivacyLedger(self.accountant, self.delta)
        for entry in [*self.history, *(extra or [])]:
            planned.record(*entry)
        return _opacus_epsilon(self.accountant, planned.history, self.delta)

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(entry) for entry in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(float(s), float(q), int(n)) for s, q, n in state["history"]]
