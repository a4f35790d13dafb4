"""The method contract as tests: a registered strategy with valid options that trains a
tiny federation, whose updates pass the server's checks, and that resumes exactly."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from fedbcs_lightning.catalog import METHODS
from fedbcs_lightning.config import Config, resolve


def tiny_config(method: str, options: dict[str, Any] | None = None, **sections: Any) -> Config:
    """A federation that trains in seconds on a CPU: 2 synthetic sites of 8 images at
    32x32, a U-Net of width 4, 2 rounds; ``options`` is the method's section and
    ``sections`` override the rest (e.g. ``model={"backbone": "my-net"}``)."""
    base: dict[str, Any] = {
        "data": {"image_size": 32, "synthetic": {"sites": 2, "images_per_site": 8}},
        "model": {"width": 4},
        "train": {"method": method, "rounds": 2, "batch_size": 4},
        "run": {"log_images": 0, "accelerator": "cpu"},
    }
    for name, section in sections.items():
        base[name] = {**base.get(name, {}), **section}
    if options:
        base[method] = options
    return resolve(options=base)


def _last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from fedbcs_lightning.io import load_checkpoint

    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["state_dict"]


class MethodContract:
    """Subclass with ``method`` (its registered name) and, where it has options,
    ``options`` (its config section); ``sections`` overrides other config sections."""

    method: str = ""
    options: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}

    def config(self, **sections: Any) -> Config:
        return tiny_config(self.method, dict(self.options), **{**self.sections, **sections})

    def fit(self, run_dir: Path, **sections: Any):
        from fedbcs_lightning.api import fit

        return fit(self.config(**sections), run_dir, progress=False)

    # -- the contract -----------------------------------------------------------------
    def test_is_a_registered_strategy_with_valid_options(self):
        from fedbcs_lightning.methods import Strategy, strategy_class

        assert self.method, f"{type(self).__name__}: set the class attribute method"
        cls = strategy_class(self.method)
        assert issubclass(cls, Strategy)
        options = METHODS.options(self.method)
        assert options is None or dataclasses.is_dataclass(options)
        config = self.config()
        strategy = cls.from_config(config)
        assert isinstance(strategy, Strategy)
        if options is not None:
            assert isinstance(config.method_options(self.method), options)

    def test_trains_a_federation_whose_updates_the_server_accepts(self, tmp_path):
        run = self.fit(tmp_path / "run")
        history = run.result.history
        assert len(history) == run.config.train.rounds
        for record in history:
            assert not record.get("rejected"), f"updates rejected: {record['rejected']}"
        weights = _last_weights(tmp_path / "run")
        finite = [bool(torch.isfinite(t).all()) for t in weights.values() if t.is_floating_point()]
        assert finite and all(finite)
        scores = run.result.test_selected
        assert scores and all(0.0 <= site["dice"] <= 1.0 for site in scores.values())

    def test_resumes_to_the_same_weights(self, tmp_path):
        from fedbcs_lightning.api import fit, resume

        self.fit(tmp_path / "whole")
        fit(self.config(train={"rounds": 1}), tmp_path / "split", progress=False)
        resume(tmp_path / "split", rounds=2, progress=False)
        want, got = _last_weights(tmp_path / "whole"), _last_weights(tmp_path / "split")
        assert sorted(got) == sorted(want)
        for key in want:
            assert torch.equal(got[key], want[key]), f"{key} differs after resume"

    def test_its_state_round_trips(self, tmp_path):
        from fedbcs_lightning.methods import create_strategy

        config = self.config()
        strategy = create_strategy(config)
        twin = create_strategy(config)
        twin.load_state_dict(strategy.state_dict())
        assert _comparable(twin.state_dict()) == _comparable(strategy.state_dict())


def _comparable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_comparable(v) for v in value]
    return value
