"""Differential privacy (privacy.*): accounting, clipping, noise, prototypes, resume."""

from __future__ import annotations

import math

import pytest
import torch

from fedbcs_lightning.api import fit, resume
from fedbcs_lightning.callbacks import FederatedCallback
from fedbcs_lightning.config import ConfigError, resolve
from fedbcs_lightning.federation.client import SegmentationClientModule
from fedbcs_lightning.federation.private import PrivateSegmentationModule
from fedbcs_lightning.methods.base import ClientHook, ClientUpdate
from fedbcs_lightning.privacy.accounting import PrivacyLedger
from fedbcs_lightning.privacy.hooks import EPSILON, PLANNED, SamplePrivacy, clip_update
from fedbcs_lightning.privacy.prototypes import release_prototypes
from fedbcs_lightning.privacy.server import ClientLevelPrivacy
from tests.helpers import StopBefore, federation


def config(method="fedavg", rounds=2, privacy=None, **train):
    return resolve(
        options={
            "data": {"image_size": 32, "synthetic": {"sites": 2, "images_per_site": 12}},
            "model": {"width": 4},
            "train": {"rounds": rounds, "batch_size": 4, "method": method, **train},
            "fedbcs": {"cdpa": True, "prototype_dim": 8},
            "privacy": {"noise_seed": 7, **(privacy or {})},
        }
    )


# --- accounting -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rdp", "prv"])
def test_the_ledger_spends_what_opacus_accountants_say(kind):
    from opacus.accountants import PRVAccountant, RDPAccountant

    ledger = PrivacyLedger(kind, delta=1e-5)
    accountant = RDPAccountant() if kind == "rdp" else PRVAccountant()
    for _round in range(3):  # interleaved DP-SGD steps and prototype releases
        ledger.record(1.1, 0.25, steps=4)
        ledger.record(2.0, 1.0, steps=1)
        for _ in range(4):
            accountant.step(noise_multiplier=1.1, sample_rate=0.25)
        accountant.step(noise_multiplier=2.0, sample_rate=1.0)
    assert len(ledger.history) == 2  # merged: composition does not depend on order
    assert ledger.epsilon() == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-3)


def test_the_planned_budget_of_a_run_is_what_it_spends(tmp_path):
    run = fit(config(privacy={"mode": "sample"}), tmp_path / "run", progress=False)
    first, last = (record["train"]["site1"] for record in run.result.history)
    assert first[PLANNED] == pytest.approx(last[EPSILON], rel=1e-9)
    assert 0 < first[EPSILON] < last[EPSILON]
    # only the privacy spent leaves the site: losses are statistics of its images too
    assert set(first) == {EPSILON, PLANNED}


# --- DP-SGD ---------------------------------------------------------------------------


class Counting(ClientHook):
    """Counts the per-image losses a round computes (the images its batches held)."""

    def __init__(self) -> None:
        self.images = 0

    def extra_losses(self, module, batch, output):
        self.images += len(batch[0])
        return {}


def trained_once(cfg):
    """One site's weights before and after one round, and the images it trained on."""
    _, clients = federation(cfg)
    client = clients[0]
    counter = Counting()
    client.module.hooks.insert(0, counter)
    before = client.get_weights()
    from fedbcs_lightning.methods.base import Instruction

    client.fit(Instruction(before, server_round=1))
    after = client.get_weights()
    hook = next(h for h in client.module.hooks if isinstance(h, SamplePrivacy))
    delta = torch.cat(
        [(after[k] - before[k]).flatten() for k in before if before[k].is_floating_point()]
    )
    return client, hook, delta, counter.images


def test_sample_mode_builds_private_clients_and_off_builds_todays():
    _, (private, _) = federation(config(privacy={"mode": "sample"}))
    _, (plain, _) = federation(config())
    assert isinstance(private.module, PrivateSegmentationModule)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in private.module.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in private.module.modules())
    assert type(private.loaders["train"]).__name__ == "DPDataLoader"
    assert type(plain.module) is SegmentationClientModule
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.module.modules())
    assert not any(isinstance(h, SamplePrivacy) for h in plain.module.hooks)
    assert type(plain.loaders["train"]).__name__ == "DataLoader"


def test_each_images_gradient_is_clipped():
    clip = 1e-3
    cfg = config(
        privacy={"mode": "sample", "max_grad_norm": clip, "noise_multiplier": 1e-9},
        optimizer="sgd",
        lr=1.0,
        weight_decay=0.0,
    )
    _, hook, delta, images = trained_once(cfg)
    bound = images * clip / hook.expected_batch_size  # SGD: the step is the mean gradient
    assert images > 0
    assert float(delta.norm()) <= bound * (1 + 1e-4)
    # clipping was at work: with a bound too large to bite, the same round moves further
    loose = config(
        privacy={"mode": "sample", "max_grad_norm": 1e6, "noise_multiplier": 1e-12},
        optimizer="sgd",
        lr=1.0,
        weight_decay=0.0,
    )
    _, _, unclipped, _ = trained_once(loose)
    assert float(unclipped.norm()) > 10 * bound


def test_dp_sgd_noise_has_the_configured_scale():
    sigma, clip = 2.0, 0.5
    cfg = config(
        privacy={"mode": "sample", "max_grad_norm": clip, "noise_multiplier": sigma},
        optimizer="sgd",
        lr=1.0,
        weight_decay=0.0,
    )
    client, hook, delta, _ = trained_once(cfg)
    # per step and weight the noise is N(0, (sigma * clip / B)^2); steps add up
    expected = math.sqrt(client.module.steps) * sigma * clip / hook.expected_batch_size
    assert delta.numel() > 5000
    assert float(delta.std()) == pytest.approx(expected, rel=0.05)


# --- client-level ---------------------------------------------------------------------


def test_client_updates_are_clipped_before_they_leave(tmp_path):
    bound = 0.05
    norms = []

    class Norms(FederatedCallback):
        def on_round_start(self, trainer, server_round):
            self.sent = trainer.weights

        def on_client_fit_end(self, trainer, server_round, update):
            keys = [k for k, v in self.sent.items() if v.is_floating_point()]
            diff = sum(
                float((update.weights[k] - self.sent[k]).double().pow(2).sum()) for k in keys
            )
            norms.append(math.sqrt(diff))

    cfg = config(privacy={"mode": "client", "update_clip": bound, "noise_multiplier": 0.1})
    fit(cfg, tmp_path / "run", callbacks=[Norms()], progress=False)
    assert len(norms) == 4 and max(norms) <= bound * (1 + 1e-5)
    assert max(norms) > 0.9 * bound  # the unclipped updates are larger than the bound


def test_clip_update_keeps_small_updates():
    sent = {"w": torch.zeros(3), "n": torch.tensor(5)}
    small = clip_update({"w": torch.tensor([0.1, 0.0, 0.0]), "n": torch.tensor(6)}, sent, 1.0)
    assert torch.equal(small["w"], torch.tensor([0.1, 0.0, 0.0])) and int(small["n"]) == 6


def test_the_servers_noise_has_the_configured_scale():
    from fedbcs_lightning.methods.fedavg import FedAvg

    options = config(
        privacy={"mode": "client", "noise_multiplier": 1.5, "update_clip": 0.2}
    ).privacy
    server = ClientLevelPrivacy(FedAvg(), options, rounds=3, noise=torch.Generator().manual_seed(0))
    updates = [ClientUpdate(f"s{i}", {"w": torch.zeros(20000)}, 10 + i) for i in range(4)]
    weights, metrics = server.aggregate_train(1, updates)
    assert float(weights["w"].std()) == pytest.approx(1.5 * 0.2 / 4, rel=0.03)
    assert abs(float(weights["w"].mean())) < 0.01
    assert 0 < metrics[EPSILON] < metrics[PLANNED]


# --- prototypes -----------------------------------------------------------------------


def _fedbcs_backbone_and_data():
    strategy, clients = federation(config("fedbcs"))
    client = clients[0]
    return client.module.backbone, client.loaders["val"].dataset  # not augmented


def test_without_noise_an_upload_reveals_an_images_class_mean_feature_exactly():
    from torch.utils.data import Subset

    from fedbcs_lightning.methods.fedbcs.strategy import DESCRIPTORS
    from fedbcs_lightning.methods.prototypes import resize_labels

    backbone, dataset = _fedbcs_backbone_and_data()
    one = Subset(dataset, [0])
    describe = getattr(backbone, DESCRIPTORS)
    bank = release_prototypes(
        backbone, describe, one, clip=1e9, noise_multiplier=0.0, generator=None
    )
    image, mask = one[0]
    backbone.eval()
    with torch.no_grad():
        descriptor = describe(backbone.forward_features(image[None]))["encoder"]
        dense = descriptor.dense()[0]
        labels = resize_labels(mask[None], descriptor.size)[0]
    for cls in labels.unique().tolist():
        exact = dense[:, labels == cls].mean(dim=1)
        assert torch.allclose(bank.centroids("encoder", cls)[0], exact, atol=1e-4)


def test_each_images_prototype_contribution_is_bounded():
    from fedbcs_lightning.methods.fedbcs.strategy import DESCRIPTORS

    backbone, dataset = _fedbcs_backbone_and_data()
    describe = getattr(backbone, DESCRIPTORS)
    bank = release_prototypes(
        backbone, describe, dataset, clip=0.01, noise_multiplier=0.0, generator=None
    )
    assert bank.vectors and all(float(v.norm()) <= 0.01 * (1 + 1e-5) for v in bank.vectors.values())


def test_private_fedbcs_uploads_noised_prototypes_and_spends_for_them(tmp_path):
    run = fit(config("fedbcs", privacy={"mode": "sample"}), tmp_path / "run", progress=False)
    plain = fit(config("fedavg", privacy={"mode": "sample"}), tmp_path / "plain", progress=False)
    eps = run.result.history[-1]["train"]["site1"][EPSILON]
    assert eps > plain.result.history[-1]["train"]["site1"][EPSILON]  # prototypes cost too
    assert any(k.startswith("clusters/") for k in run.result.history[-1]["aggregate"])


# --- resume and refusals --------------------------------------------------------------


@pytest.mark.parametrize(("method", "mode"), [("fedbcs", "sample"), ("fedavg", "client")])
def test_a_private_run_resumes_bitwise(tmp_path, method, mode):
    cfg = config(method, rounds=3, privacy={"mode": mode})
    reference = fit(cfg, tmp_path / "reference", progress=False)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "run", callbacks=[StopBefore(3)], progress=False)
    resumed = resume(tmp_path / "run", progress=False)
    want, got = reference.result.last_weights, resumed.result.last_weights
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert resumed.result.history == reference.result.history


def test_without_a_noise_seed_each_run_draws_its_own_noise(tmp_path):
    cfg = config(rounds=1, privacy={"mode": "sample", "noise_seed": None})
    a = fit(cfg, tmp_path / "a", progress=False).result.last_weights
    b = fit(cfg, tmp_path / "b", progress=False).result.last_weights
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize(
    ("method", "mode", "match"),
    [
        ("fedbn", "sample", "BatchNorm"),
        ("harmofl", "sample", "neither clipped"),
        ("pooled", "sample", "no site to protect"),
        ("fedbcs", "client", "privacy.mode=sample"),
        ("fpl", "client", "privacy.mode=sample"),
        ("local", "client", "averages nothing"),
    ],
)
def test_methods_that_cannot_be_private_are_refused_with_the_reason(method, mode, match):
    with pytest.raises(ConfigError, match=match):
        federation(config(method, privacy={"mode": mode}))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"privacy": {"mode": "sample"}, "run": {"precision": "bf16-mixed"}}, "32-bit"),
        ({"privacy": {"mode": "client"}, "server": {"aggregation": "median"}}, "mean of clipped"),
        ({"privacy": {"mode": "laplace"}}, "privacy.mode"),
        ({"privacy": {"delta": 1.0}}, "privacy.delta"),
        ({"privacy": {"noise_multiplier": 0}}, "privacy.noise_multiplier"),
    ],
)
def test_bad_privacy_settings_are_refused(options, match):
    with pytest.raises(ConfigError, match=match):
        resolve(options=options)


def test_crops_of_one_image_are_refused_under_sample_privacy(tmp_path):
    from tests.test_rundir import write_sites

    write_sites(tmp_path / "data", images=6)
    options = {
        "data": {"name": "sites", "root": str(tmp_path / "data"), "image_size": 32},
        "model": {"width": 4},
        "privacy": {"mode": "sample"},
    }
    with pytest.raises(ConfigError, match="crops_per_image"):
        federation(resolve(options={**options, "data": {**options["data"], "crops_per_image": 4}}))
    _, clients = federation(
        resolve(options={**options, "data": {**options["data"], "crops_per_image": 1}})
    )
    assert type(clients[0].loaders["train"]).__name__ == "DPDataLoader"


def test_the_run_says_what_it_will_spend_and_what_it_spent(tmp_path, capsys):
    run = fit(config(privacy={"mode": "sample"}), tmp_path / "run", progress=True)
    out = capsys.readouterr().out
    spent = run.result.history[-1]["train"]["site1"][EPSILON]
    assert f"privacy: planned epsilon at delta=1e-05 site1 {spent:.2f}" in out
    assert f"privacy: spent epsilon at delta=1e-05 site1 {spent:.2f}" in out
    assert "round 1/2  val dice" in out  # no loss: private sites do not upload one


def test_a_private_runs_checkpoint_is_rebuilt_with_groupnorm_and_scores(tmp_path):
    from fedbcs_lightning.evaluation.scoring import evaluate_checkpoint

    run = fit(
        config("fedbcs", rounds=1, privacy={"mode": "sample"}), tmp_path / "run", progress=False
    )
    scores = evaluate_checkpoint(run.run_dir / "checkpoints" / "last.pt", split="test")
    assert scores.sites["site1"]["dice"] == pytest.approx(run.result.test_last["site1"]["dice"])


@pytest.mark.parametrize("method", ["fedprox", "moon", "fpl", "local"])
def test_the_other_supported_methods_train_privately(tmp_path, method):
    run = fit(
        config(method, rounds=1, privacy={"mode": "sample"}), tmp_path / "run", progress=False
    )
    uploads = run.result.history[-1]["train"]
    assert set(uploads) == {"site1", "site2"}
    assert all(set(m) == {EPSILON, PLANNED} and m[EPSILON] > 0 for m in uploads.values())
