"""The server rejects bad updates before aggregation, and goes on without them."""

import math

import pytest
import torch

from fedbcs_lightning.config import resolve
from fedbcs_lightning.federation.trainer import FederatedTrainer
from fedbcs_lightning.federation.updates import FederationStopped, RejectedUpdate, UpdateValidator
from fedbcs_lightning.methods import ClientUpdate, create_strategy, robust_average
from fedbcs_lightning.methods.baselines import FedBN, LocalOnly
from fedbcs_lightning.methods.fedavg import FedAvg
from fedbcs_lightning.methods.fedbcs.strategy import FedBCS
from fedbcs_lightning.methods.options import FedBCSOptions
from fedbcs_lightning.models.unet import UNet
from tests.helpers import federation

TEMPLATE = {
    "conv.weight": torch.ones(2, 3),
    "conv.bias": torch.zeros(2),
    "bn.num_batches_tracked": torch.tensor(3),
}


def update(client="a", count=4, **changes):
    weights = {k: v.clone() for k, v in TEMPLATE.items()}
    weights.update(changes)
    return ClientUpdate(client, weights, count)


def reason(bad: ClientUpdate, strategy=None, max_update_norm=0.0) -> str:
    validator = UpdateValidator(TEMPLATE, max_update_norm)
    with pytest.raises(RejectedUpdate) as caught:
        validator.check(bad, TEMPLATE, strategy or FedAvg())
    assert caught.value.client == bad.client
    return caught.value.reason


def test_a_good_update_passes():
    UpdateValidator(TEMPLATE).check(update(), TEMPLATE, FedAvg())


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (
            update(**{"conv.bias": torch.tensor([0.0, math.nan])}),
            "non-finite values in 'conv.bias'",
        ),
        (
            update(**{"conv.weight": torch.full((2, 3), math.inf)}),
            "non-finite values in 'conv.weight'",
        ),
        (update(**{"conv.bias": torch.zeros(2, dtype=torch.float64)}), "has dtype torch.float64"),
        (update(**{"conv.bias": torch.tensor(0.5)}), "'conv.bias' has shape (), expected (2,)"),
        (update(**{"conv.bias": torch.zeros(1, 2)}), "has shape (1, 2), expected (2,)"),
        (update(**{"extra.weight": torch.zeros(1)}), "wrong weights: extra 'extra.weight'"),
        (update(**{"conv.bias": [0.0, 0.0]}), "'conv.bias' is a list, not a tensor"),
        (update(count=-3), "example count must be a positive integer, got -3"),
        (update(count=0), "example count must be a positive integer, got 0"),
        (update(count=math.nan), "example count must be a positive integer, got nan"),
        (update(count=True), "example count must be a positive integer, got True"),
    ],
)
def test_bad_weights_and_counts_are_rejected_with_the_reason(bad, expected):
    assert expected in reason(bad)


def test_a_missing_key_is_rejected():
    bad = update()
    del bad.weights["conv.bias"]
    assert "wrong weights: missing 'conv.bias'" in reason(bad)


def test_the_norm_bound_is_relative_to_the_weights_sent():
    near = update(**{"conv.weight": torch.full((2, 3), 1.1)})  # 10% change
    UpdateValidator(TEMPLATE, 0.5).check(near, TEMPLATE, FedAvg())
    far = update(**{"conv.weight": torch.full((2, 3), 3.0)})  # 200% change
    assert "update too large: ||update - global|| is 2 x ||global||" in reason(far, None, 0.5)
    UpdateValidator(TEMPLATE, 0.0).check(far, TEMPLATE, FedAvg())  # 0 = no bound


def fedbcs_strategy():
    strategy = FedBCS(FedBCSOptions(cdpa=True, prototype_dim=8))
    strategy.configure_backbone(UNet(3, 2, width=4))
    return strategy


def with_prototypes(prototypes):
    good = update()
    good.payload = {"prototypes": prototypes}
    return good


def test_fedbcs_checks_the_prototypes():
    strategy = fedbcs_strategy()
    dims = strategy.prototype_shape[0]
    good = {f"{level}/1": torch.zeros(1, dim) for level, dim in dims.items()}
    UpdateValidator(TEMPLATE).check(with_prototypes(good), TEMPLATE, strategy)
    nan = {**good, "encoder/1": torch.full((1, dims["encoder"]), math.nan)}
    assert "prototype 'encoder/1': non-finite values" in reason(with_prototypes(nan), strategy)
    short = {**good, "decoder/0": torch.zeros(1, 3)}
    expected = f"prototype 'decoder/0': shape (1, 3), expected (1, {dims['decoder']})"
    assert expected in reason(with_prototypes(short), strategy)
    unknown = {**good, "encoder/7": torch.zeros(1, dims["encoder"])}
    assert "no such level/class" in reason(with_prototypes(unknown), strategy)
    missing = update()
    assert "payload must be" in reason(missing, strategy)


def test_the_default_payload_check_finds_a_nan_anywhere():
    bad = update()
    bad.payload = {"stats": {"mean": [1.0, math.nan]}}
    assert "non-finite values in payload['stats']['mean'][1]" in reason(bad)


def test_robust_aggregation_ignores_one_extreme_client():
    values = (1.0, 2.0, 3.0, 4.0, 1e6)
    ups = [
        update(c, **{"conv.bias": torch.tensor([v, v])})
        for c, v in zip("abcde", values, strict=True)
    ]
    assert torch.equal(robust_average(ups, "median")["conv.bias"], torch.tensor([3.0, 3.0]))
    trimmed = robust_average(ups, "trimmed_mean", trim_fraction=0.2)["conv.bias"]
    assert torch.equal(trimmed, torch.tensor([3.0, 3.0]))  # (2 + 3 + 4) / 3
    assert robust_average(ups[:4], "median")["conv.bias"][0] == 2.5  # even: the middle two
    assert robust_average(ups, "median")["bn.num_batches_tracked"] == 3  # integers: the largest
    mean = FedAvg().aggregate_train(1, ups)[0]["conv.bias"][0]
    assert mean > 1e5  # what a plain mean does with the same updates


def test_server_aggregation_config_reaches_the_strategy():
    config = resolve(overrides=["server.aggregation=median", "train.method=fedprox"])
    strategy = create_strategy(config)
    ups = [
        update(c, **{"conv.bias": torch.tensor([v, v])})
        for c, v in zip("abc", (0.0, 1.0, 100.0), strict=True)
    ]
    assert strategy.aggregate_train(1, ups)[0]["conv.bias"][0] == 1.0


def test_local_and_fedbn_keep_the_models_of_sites_without_an_accepted_update():
    previous = {"a/w": torch.tensor([1.0]), "b/w": torch.tensor([2.0])}
    local = LocalOnly()
    local.configure_train(2, previous, ["a", "b"])
    merged, _ = local.aggregate_train(2, [ClientUpdate("a", {"w": torch.tensor([5.0])}, 1)])
    assert merged == {"a/w": torch.tensor([5.0]), "b/w": torch.tensor([2.0])}

    fedbn = FedBN()
    fedbn.local_prefixes = ("bn.",)
    sent = {"w": torch.tensor([0.0]), "a/bn.x": torch.tensor([1.0]), "b/bn.x": torch.tensor([2.0])}
    fedbn.configure_train(2, sent, ["a", "b"])
    new = ClientUpdate("a", {"w": torch.tensor([4.0]), "bn.x": torch.tensor([7.0])}, 1)
    merged, _ = fedbn.aggregate_train(2, [new])
    assert merged["b/bn.x"] == 2.0 and merged["a/bn.x"] == 7.0 and merged["w"] == 4.0


def tiny(method="fedavg", **server):
    return resolve(
        options={
            "data": {"image_size": 32, "synthetic": {"sites": 3, "images_per_site": 6}},
            "model": {"width": 4},
            "train": {"rounds": 2, "batch_size": 4, "method": method},
            "fedbcs": {"cdpa": True, "prototype_dim": 8},
            "server": server,
        }
    )


def poison(client, key):
    """Make ``client`` upload NaN in ``key`` (a client gone wrong, or a hostile one)."""
    honest = client.fit

    def fit(instruction):
        result = honest(instruction)
        result.weights[key] = torch.full_like(result.weights[key], math.nan)
        return result

    client.fit = fit


class Recorder:
    runs_last = False

    def __init__(self):
        self.rejected, self.aggregated = [], []

    def __getattr__(self, hook):
        return lambda *args: None

    def on_update_rejected(self, trainer, server_round, client, why):
        self.rejected.append((server_round, client, why))


def test_a_poisoned_client_is_left_out_and_the_round_goes_on():
    strategy, clients = federation(tiny("fedbcs"))
    key = next(k for k in clients[0].get_weights() if k.endswith("weight"))
    poison(clients[1], key)
    recorder = Recorder()
    trainer = FederatedTrainer(clients, strategy, 2, [recorder], min_clients=2)
    result = trainer.fit(clients[0].get_weights())
    assert [r[:2] for r in recorder.rejected] == [(1, "site2"), (2, "site2")]
    assert recorder.rejected[0][2] == f"non-finite values in {key!r}"
    assert all(
        torch.isfinite(v).all() for v in result.last_weights.values() if v.is_floating_point()
    )
    assert trainer.history[0]["rejected"] == {"site2": f"non-finite values in {key!r}"}
    assert set(trainer.history[0]["train"]) == {"site1", "site3"}


def test_too_few_accepted_updates_stop_the_run():
    strategy, clients = federation(tiny())
    key = next(iter(clients[0].get_weights()))
    for client in clients[1:]:
        poison(client, key)
    trainer = FederatedTrainer(clients, strategy, 2, min_clients=2)
    with pytest.raises(
        FederationStopped, match=r"round 1: 1 of 3 client updates accepted, fewer than the 2"
    ):
        trainer.fit(clients[0].get_weights())
    with pytest.raises(ValueError, match="server.min_clients=4 but the federation has 3"):
        FederatedTrainer(clients, strategy, 2, min_clients=4)


def test_a_diverging_client_is_rejected_with_round_client_and_step():
    strategy, clients = federation(tiny())
    clients[2].module.compute_loss = lambda output, target: output.logits.sum() * math.nan
    recorder = Recorder()
    trainer = FederatedTrainer(clients, strategy, 1, [recorder])
    trainer.fit(clients[0].get_weights())
    (rejected,) = recorder.rejected
    assert rejected[1] == "site3"
    assert rejected[2].startswith("training diverged in round 1, step 1: loss nan")
    assert "lower train.lr (now 0.001)" in rejected[2]
    # the client keeps the weights it had before the failed round (its local layers too)
    before = clients[2].get_weights()
    instruction = strategy.configure_train(2, trainer.weights, ["site3"])["site3"]
    with pytest.raises(RejectedUpdate, match="round 2"):
        clients[2].fit(instruction)
    after = clients[2].get_weights()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_the_default_bound_refuses_a_scaled_update_and_passes_honest_ones():
    """``server.max_update_norm`` is on by default (the bound measured by
    benchmarks/update_norms.py): an update scaled by 1e30 is refused without any option,
    while honest training of every federation in the tests stays far below it."""
    bound = resolve().server.max_update_norm
    assert bound > 0
    scaled = update(**{"conv.weight": TEMPLATE["conv.weight"] * 1e30})
    assert "update too large" in reason(scaled, max_update_norm=bound)
    nudged = update(**{"conv.weight": TEMPLATE["conv.weight"] * 1.5})  # a 50% change
    UpdateValidator(TEMPLATE, bound).check(nudged, TEMPLATE, FedAvg())


def test_the_bound_leaves_out_tensors_that_stay_at_their_site():
    class BiasStaysLocal(FedAvg):
        def is_local(self, key):
            return key == "conv.bias"

    validator = UpdateValidator(TEMPLATE, max_update_norm=1.0)
    local_jump = update(**{"conv.bias": torch.full((2,), 1e6)})  # e.g. HarmoFL's amplitudes
    validator.check(local_jump, TEMPLATE, BiasStaysLocal())
    with pytest.raises(RejectedUpdate, match="update too large"):
        validator.check(local_jump, TEMPLATE, FedAvg())
