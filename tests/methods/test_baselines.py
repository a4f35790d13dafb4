import pytest
import torch

from fedbcs_lightning.config import merge
from fedbcs_lightning.federation.client import SegmentationClientModule
from fedbcs_lightning.federation.trainer import FederatedTrainer
from fedbcs_lightning.methods import ClientUpdate, Instruction
from fedbcs_lightning.methods.baselines import FedBN, LocalOnly, ProximalTerm
from fedbcs_lightning.models.unet import UNet
from tests.helpers import federation


def _update(client, weights):
    return ClientUpdate(client.name, weights, client.num_train_examples)


def test_fedprox_gradient_is_mu_times_distance_to_global():
    torch.manual_seed(0)
    net = UNet(3, 2, width=4)
    module = SegmentationClientModule(net)
    global_weights = {
        k: v + 0.5 * torch.randn_like(v) if v.is_floating_point() else v
        for k, v in net.state_dict().items()
    }
    hook = ProximalTerm(mu=0.3)
    hook.on_fit_start(module, Instruction(global_weights))
    loss = hook.extra_losses(module, None, None)["proximal"]
    loss.backward()
    for name, param in net.named_parameters():
        expected = 0.3 * (param.detach() - global_weights[name])
        assert torch.allclose(param.grad, expected, atol=1e-6), name


def test_fedprox_trains_end_to_end(tiny_config):
    cfg = merge(tiny_config, {"train": {"method": "fedprox"}, "fedprox": {"mu": 0.1}})
    strategy, clients = federation(cfg)
    result = FederatedTrainer(clients, strategy, 2).fit(clients[0].get_weights())
    assert result.history[1]["train"]["site1"]["loss/proximal"] > 0


def test_fedbn_never_averages_batchnorm_and_sends_each_site_its_own(tiny_config):
    cfg = merge(tiny_config, {"train": {"method": "fedbn"}})
    strategy, clients = federation(cfg)
    assert isinstance(strategy, FedBN) and strategy.local_prefixes
    result = FederatedTrainer(clients, strategy, 2).fit(clients[0].get_weights())
    a, b = clients[0].get_weights(), clients[1].get_weights()
    bn_keys = [k for k in a if strategy.is_local(k)]
    assert bn_keys and any(k.endswith("running_mean") for k in bn_keys)
    key = next(k for k in bn_keys if k.endswith("running_mean"))
    assert not torch.equal(a[key], b[key])  # each site keeps its own statistics
    # The global weights hold every site's BatchNorm tensors under <site>/<key>, and
    # each site is sent back exactly its own (the clients were last loaded with the
    # selected round's weights, for the final test).
    selected = result.selected_weights
    assert not any(strategy.is_local(k) for k in selected)
    for client, own in zip(clients, (a, b), strict=True):
        assert torch.equal(selected[f"{client.name}/{key}"], own[key])
        sent = strategy.configure_train(3, selected, [client.name])[client.name]
        assert torch.equal(sent.weights[key], own[key])
        assert not any("/" in k for k in sent.weights)
    weights, _ = strategy.aggregate_train(3, [_update(clients[0], a), _update(clients[1], b)])
    assert key not in weights  # never averaged
    conv = next(k for k in a if not strategy.is_local(k) and k.endswith("weight"))
    n1, n2 = clients[0].num_train_examples, clients[1].num_train_examples
    expected = (a[conv] * n1 + b[conv] * n2) / (n1 + n2)
    assert torch.allclose(weights[conv], expected, atol=1e-6)  # the rest is averaged


def test_local_never_aggregates(tiny_config):
    cfg = merge(tiny_config, {"train": {"method": "local"}})
    strategy, clients = federation(cfg)
    assert isinstance(strategy, LocalOnly)
    FederatedTrainer(clients, strategy, 2).fit(clients[0].get_weights())
    own = [c.get_weights() for c in clients]
    weights, _ = strategy.aggregate_train(
        3, [_update(c, w) for c, w in zip(clients, own, strict=True)]
    )
    for client, mine in zip(clients, own, strict=True):
        sent = strategy.configure_train(3, weights, [client.name])[client.name].weights
        assert all(torch.equal(sent[k], mine[k]) for k in mine)
    key = "head.weight"
    assert not torch.equal(own[0][key], own[1][key])


@pytest.mark.parametrize("method", ["fedprox", "fedbn", "local"])
def test_listed(method):
    from fedbcs_lightning.catalog import METHODS

    assert method in METHODS.names()
