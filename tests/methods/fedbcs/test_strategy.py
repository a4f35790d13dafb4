import pytest
import torch
from typer.testing import CliRunner

from fedbcs_cli.main import app
from fedbcs_lightning.config import merge
from fedbcs_lightning.data import load_dataset, make_splits
from fedbcs_lightning.federation.build import build_clients
from fedbcs_lightning.federation.trainer import FederatedTrainer
from fedbcs_lightning.methods import create_strategy
from fedbcs_lightning.methods.fedbcs.fsr import FrequencyStyleRecalibration
from fedbcs_lightning.methods.fedbcs.strategy import FedBCS
from fedbcs_lightning.models.unet import UNet


def _run(cfg, rounds=2):
    strategy = create_strategy(cfg)
    data = load_dataset(cfg)
    splits = make_splits(data, cfg.data.val_fraction, cfg.data.test_fraction, cfg.run.seed)
    clients = build_clients(cfg, data, splits, strategy)
    result = FederatedTrainer(clients, strategy, rounds).fit(clients[0].get_weights())
    return strategy, clients, result


@pytest.fixture
def fedbcs_config(tiny_config):
    return merge(
        tiny_config, {"train": {"method": "fedbcs"}, "fedbcs": {"cdpa": True, "prototype_dim": 8}}
    )


def test_fedbcs_round_one_has_no_alignment_and_round_two_does(fedbcs_config):
    strategy, clients, result = _run(fedbcs_config)
    first, second = result.history[0]["train"]["site1"], result.history[1]["train"]["site1"]
    assert "loss/align/encoder" not in first
    assert second["loss/align/encoder"] > 0 and second["loss/align/decoder"] > 0
    aggregate = result.history[0]["aggregate"]
    # 2 levels x 3 classes (background, rim, cup); two clients -> one cluster each
    assert {k: v for k, v in aggregate.items() if k.startswith("clusters/")} == {
        f"clusters/{lvl}/{c}": 1 for lvl in ("encoder", "decoder") for c in range(3)
    }
    assert {"fsr/level2/normalised", "fsr/level3/normalised", "fsr/level4/normalised"} <= set(
        aggregate
    )
    bank = strategy.global_prototypes
    assert bank.centroids("encoder", 1).shape == (1, 24)  # 3 fused levels x D = 8


def test_prototypes_travel_and_all_weights_are_averaged(fedbcs_config):
    strategy, clients, result = _run(fedbcs_config, rounds=1)
    weights = result.last_weights
    assert any(k.startswith("encoder_transforms.1.") for k in weights)
    assert any(k.startswith("prototype_descriptors.fusions.decoder") for k in weights)
    a, b = clients[0].get_weights(), clients[1].get_weights()
    key = "prototype_descriptors.fusions.encoder.local.0.weight"
    n1, n2 = clients[0].num_train_examples, clients[1].num_train_examples
    expected = (a[key] * n1 + b[key] * n2) / (n1 + n2)
    assert torch.allclose(weights[key], expected, atol=1e-6)


def test_fsr_sits_after_levels_two_to_four_only():
    net = FedBCS().configure_backbone(UNet(3, 2, width=4))
    placed = {int(k): type(m) for k, m in net.encoder_transforms.items()}
    assert placed == {
        1: FrequencyStyleRecalibration,
        2: FrequencyStyleRecalibration,
        3: FrequencyStyleRecalibration,
    }


@pytest.mark.parametrize(
    "switches, has_fsr, sides",
    [
        ({"fsr": False}, False, {"encoder", "decoder"}),
        ({"cdpa": False}, True, None),
        ({"prototype_levels": ["encoder"]}, True, {"encoder"}),
        ({"prototype_levels": ["decoder"]}, True, {"decoder"}),
    ],
)
def test_ablation_switches(tiny_config, switches, has_fsr, sides):
    cfg = merge(
        tiny_config,
        {"train": {"method": "fedbcs"}, "fedbcs": {"cdpa": True, "prototype_dim": 8, **switches}},
    )
    strategy = create_strategy(cfg)
    net = strategy.configure_backbone(UNet(3, 3, width=4))
    assert bool(len(net.encoder_transforms)) == has_fsr
    if sides is None:
        assert not hasattr(net, "prototype_descriptors") and strategy.client_hooks() == []
    else:
        assert set(net.prototype_descriptors.fusions) == sides


def test_mean_clustering_and_state_round_trip(fedbcs_config):
    cfg = merge(fedbcs_config, {"fedbcs": {"clustering": "mean"}})
    strategy, _, _ = _run(cfg, rounds=1)
    again = FedBCS()
    again.load_state_dict(strategy.state_dict())
    assert again.global_prototypes.vectors.keys() == strategy.global_prototypes.vectors.keys()


def test_fsr_level_beyond_the_backbone_is_a_clear_error():
    strategy = FedBCS()
    strategy.options.fsr_levels = [5]
    with pytest.raises(ValueError, match="level 5 does not exist; the backbone has 4"):
        strategy.configure_backbone(UNet(3, 2, width=4))


def test_cli_fit_with_fedbcs(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "fit",
            "--method",
            "fedbcs",
            "--dataset",
            "synthetic",
            "--rounds",
            "3",
            "--clients",
            "2",
            "--image-size",
            "32",
            "--output",
            str(tmp_path / "run"),
            "--set",
            "data.synthetic.images_per_site=10",
            "--set",
            "model.width=4",
            "--set",
            "fedbcs.prototype_dim=8",
            "--set",
            "fedbcs.cdpa=true",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "mean" in result.output
    lines = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"split": "server"' in lines and "clusters/encoder/1" in lines


def test_uploaded_prototypes_come_from_the_weights_the_step_used(tiny_config):
    """One step on one batch: the prototypes equal those of the pre-step weights (the
    forward that made the features), not of the weights after the optimiser's step."""
    from fedbcs_lightning.methods.fedbcs.strategy import DESCRIPTORS
    from fedbcs_lightning.methods.prototypes import resize_labels
    from tests.helpers import federation

    cfg = merge(
        tiny_config,
        {
            "train": {"method": "fedbcs", "batch_size": 16, "lr": 0.05},
            "data": {"augment": False},
            "fedbcs": {"cdpa": True, "prototype_dim": 8},
        },
    )
    strategy, clients = federation(cfg)
    client = clients[0]
    dataset = client.loaders["train"].dataset
    assert len(dataset) <= 16  # one batch, one step
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    masks = torch.stack([dataset[i][1] for i in range(len(dataset))])
    first = strategy.configure_train(1, client.get_weights(), [client.name])[client.name]
    strategy.aggregate_train(1, [client.fit(first)])  # global prototypes for round 2
    before = client.get_weights()
    # round 2: the alignment loss trains the fusion layers, so the step changes them
    instruction = strategy.configure_train(2, before, [client.name])[client.name]
    assert instruction.config["prototypes"]
    uploaded = client.fit(instruction).payload["prototypes"]

    def prototypes(weights):
        net = client.module.backbone
        net.load_state_dict(weights)
        net.train()
        with torch.no_grad():
            descriptors = getattr(net, DESCRIPTORS)(net.forward_features(images))
        out = {}
        for level, descriptor in descriptors.items():
            sums, counts = descriptor.class_sums(resize_labels(masks, descriptor.size), 3)
            for c in torch.nonzero(counts).flatten().tolist():
                out[f"{level}/{c}"] = sums[c] / counts[c]
        return out

    after = client.get_weights()
    expected, stale = prototypes(before), prototypes(after)
    assert uploaded.keys() == expected.keys()
    for key, value in uploaded.items():
        assert torch.allclose(value[0], expected[key], atol=1e-5), key
    assert max(float((stale[k] - expected[k]).abs().max().detach()) for k in expected) > 1e-3


@pytest.mark.parametrize("max_per_class", [0, 4])
def test_a_batch_without_foreground_has_no_anchors(max_per_class):
    from fedbcs_lightning.methods.fedbcs.strategy import sample_anchors

    b, y, x = sample_anchors(torch.zeros(2, 8, 8, dtype=torch.long), max_per_class)
    assert len(b) == len(y) == len(x) == 0
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 2, 3] = 1
    assert [t.tolist() for t in sample_anchors(labels, max_per_class)] == [[0], [2], [3]]


def test_warmup_scales_the_alignment_loss_by_round(tiny_config):
    """With ``warmup_rounds=4`` the alignment term of the same batch and weights is a
    quarter of the full one in round 2 and whole from round 5; none in round 1."""
    from fedbcs_lightning.methods.base import Instruction
    from fedbcs_lightning.methods.fedbcs.strategy import PrototypeAlignment
    from tests.helpers import federation

    cfg = merge(
        tiny_config,
        {
            "train": {"method": "fedbcs"},
            "fedbcs": {"cdpa": True, "prototype_dim": 8, "max_anchors": 0, "warmup_rounds": 4},
        },
    )
    strategy, clients = federation(cfg)
    client = clients[0]
    first = strategy.configure_train(1, client.get_weights(), [client.name])[client.name]
    strategy.aggregate_train(1, [client.fit(first)])
    bank = strategy.configure_train(2, client.get_weights(), [client.name])[client.name]
    images, masks = next(iter(client.loaders["train"]))
    net = client.module.backbone.eval()

    def alignment(server_round):
        hook = PrototypeAlignment(cfg.fedbcs, cfg.train.local_epochs, collect=False)
        hook.on_fit_start(client.module, Instruction(bank.weights, bank.config, server_round))
        with torch.no_grad():
            losses = hook.extra_losses(client.module, (images, masks), net.forward_features(images))
        return sum(float(v) for v in losses.values())

    full = alignment(5)
    assert full > 0
    assert alignment(2) == pytest.approx(full / 4, rel=1e-5)
    assert alignment(9) == pytest.approx(full, rel=1e-5)
