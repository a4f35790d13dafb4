"""Callbacks' saved state is keyed by their ``state_key``: two instances of one class
keep their own state through a resume, and two that would overwrite each other are
refused."""

import pytest

from fedbcs_lightning.api import fit, resume
from fedbcs_lightning.callbacks import FederatedCallback
from fedbcs_lightning.testing import tiny_config


class RoundCounter(FederatedCallback):
    """Counts the rounds it saw, in a state that must survive a resume."""

    def __init__(self, name: str | None = None) -> None:
        self.name, self.rounds = name, 0

    @property
    def state_key(self) -> str:
        return f"RoundCounter[{self.name}]" if self.name else super().state_key

    def on_round_end(self, trainer, server_round, record):
        self.rounds += 1 if self.name != "double" else 2

    def state_dict(self):
        return {"rounds": self.rounds}

    def load_state_dict(self, state):
        self.rounds = state["rounds"]


def test_two_instances_with_their_own_keys_each_resume_their_state(tmp_path):
    config = tiny_config("fedavg", train={"rounds": 1})
    fit(config, tmp_path / "run", callbacks=[RoundCounter("single"), RoundCounter("double")],
        progress=False)  # fmt: skip
    single, double = RoundCounter("single"), RoundCounter("double")
    resume(tmp_path / "run", rounds=2, callbacks=[single, double], progress=False)
    assert (single.rounds, double.rounds) == (2, 4)


def test_two_stateful_instances_under_one_key_are_refused(tmp_path):
    config = tiny_config("fedavg", train={"rounds": 1})
    with pytest.raises(ValueError, match="share the state key 'RoundCounter'"):
        fit(config, tmp_path / "run", callbacks=[RoundCounter(), RoundCounter()], progress=False)
    assert not (tmp_path / "run").exists()
