"""The random side of DP-SGD at a site: Poisson-sampled batches (Opacus's
``DPDataLoader``, as its accountants assume) and generators whose seeds the site keeps
to itself. Training step: ``federation.private.PrivateSegmentationModule``.
"""

from __future__ import annotations

import secrets

import torch

from fedbcs_lightning.rng import site_seed


def private_generator(noise_seed: int | None, site: str, stream: int) -> torch.Generator:
    """A generator for noise or sampling: from a secret the site draws itself (never
    written anywhere but its own state), or, with ``noise_seed``, reproducible."""
    seed = secrets.randbits(62) if noise_seed is None else site_seed(noise_seed, site, stream)
    return torch.Generator().manual_seed(seed)


def poisson_loader(loader, generator: torch.Generator):
    """``loader`` with Poisson sampling: each image joins each batch with probability
    ``1 / len(loader)`` (the expected batch size stays ``loader.batch_size``)."""
    from opacus.data_loader import DPDataLoader

    return DPDataLoader.from_data_loader(loader, generator=generator)
