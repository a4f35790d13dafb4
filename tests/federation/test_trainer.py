import torch

from fedbcs_lightning.callbacks import FederatedCallback
from fedbcs_lightning.config import resolve
from fedbcs_lightning.data import load_dataset, make_splits
from fedbcs_lightning.federation.build import build_clients
from fedbcs_lightning.federation.trainer import FederatedTrainer
from fedbcs_lightning.methods import ClientHook, Strategy, weighted_average
from fedbcs_lightning.methods.fedavg import FedAvg


def _federation(cfg, strategy):
    data = load_dataset(cfg)
    splits = make_splits(data, cfg.data.val_fraction, cfg.data.test_fraction, cfg.run.seed)
    return build_clients(cfg, data, splits, strategy)


class Recorder(FederatedCallback):
    def __init__(self):
        self.events = []

    def on_fit_start(self, trainer):
        self.events.append("fit_start")

    def on_round_start(self, trainer, r):
        self.events.append(f"round_start{r}")

    def on_client_fit_start(self, trainer, r, client):
        self.events.append(f"client_start{r}:{client}")

    def on_client_fit_end(self, trainer, r, update):
        self.events.append(f"client_end{r}:{update.client}")

    def on_aggregate_end(self, trainer, r, metrics):
        self.events.append(f"aggregate{r}")

    def on_round_end(self, trainer, r, record):
        self.events.append(f"round_end{r}")

    def on_fit_end(self, trainer, result):
        self.events.append("fit_end")


def test_loop_calls_hooks_in_order_and_selects_on_validation(tiny_config):
    clients = _federation(tiny_config, FedAvg())
    recorder = Recorder()
    trainer = FederatedTrainer(clients, FedAvg(), rounds=2, callbacks=[recorder])
    result = trainer.fit(clients[0].get_weights())
    per_round = [
        "round_start{r}",
        "client_start{r}:site1",
        "client_end{r}:site1",
        "client_start{r}:site2",
        "client_end{r}:site2",
        "aggregate{r}",
        "round_end{r}",
    ]
    expected = ["fit_start"] + [e.format(r=r) for r in (1, 2) for e in per_round] + ["fit_end"]
    assert recorder.events == expected
    val = [h["val"]["mean"]["dice"] for h in result.history]
    assert result.best_round == 1 + max(range(len(val)), key=val.__getitem__)
    assert set(result.test_last) == {"site1", "site2"}
    assert "hd95" in result.test_last["site1"]


class AddOne(ClientHook):
    """A method's client side: an extra loss term and an uploaded payload."""

    def __init__(self):
        self.received = None
        self.calls = 0

    def on_fit_start(self, module, instruction):
        self.received = instruction.config["note"]

    def extra_losses(self, module, batch, output):
        self.calls += 1
        return {"extra": output.logits.mean() * 0}

    def on_fit_end(self, module):
        return {"calls": self.calls, "echo": self.received}


class NoteStrategy(Strategy):
    """A new method that plugs in without touching the loop."""

    def __init__(self):
        self.payloads = []

    def client_hooks(self):
        return [AddOne()]

    def configure_train(self, server_round, weights, clients):
        instructions = super().configure_train(server_round, weights, clients)
        for c in clients:
            instructions[c].config["note"] = f"hello {c}"
        return instructions

    def aggregate_train(self, server_round, updates):
        self.payloads.append({u.client: u.payload for u in updates})
        return weighted_average(updates), {"seen": len(updates)}


def test_strategy_and_client_hooks_plug_in(tiny_config):
    strategy = NoteStrategy()
    clients = _federation(tiny_config, strategy)
    result = FederatedTrainer(clients, strategy, rounds=2).fit(clients[0].get_weights())
    first = strategy.payloads[0]
    assert first["site1"]["echo"] == "hello site1" and first["site1"]["calls"] > 0
    assert "loss/extra" in result.history[0]["train"]["site1"]
    assert result.history[1]["aggregate"] == {"seen": 2}


def test_clients_keep_optimizer_state_across_rounds(tiny_config):
    clients = _federation(tiny_config, FedAvg())
    client = clients[0]
    weights = client.get_weights()
    from fedbcs_lightning.methods import Instruction

    client.fit(Instruction(weights))
    steps_one = client.module.steps
    state = client.module.optimizer_state["state"][0]["step"].item()
    assert state == steps_one
    client.fit(Instruction(weights))
    assert client.module.optimizer_state["state"][0]["step"].item() == state + client.module.steps


def test_all_clients_start_from_the_same_weights(tiny_config):
    clients = _federation(tiny_config, FedAvg())
    a, b = clients[0].get_weights(), clients[1].get_weights()
    assert all(torch.equal(a[k], b[k]) for k in a)


class Halving(ClientHook):
    """Changes what leaves the site: what the server receives is what this returns."""

    def before_upload(self, update):
        update.weights = {
            k: v / 2 if v.is_floating_point() else v for k, v in update.weights.items()
        }
        update.metrics["halved"] = 1.0
        return update


def test_every_upload_passes_before_upload_last(tiny_config):
    from fedbcs_lightning.methods import Instruction

    client = _federation(tiny_config, FedAvg())[0]
    client.module.hooks.append(Halving())
    update = client.fit(Instruction(client.get_weights(), server_round=1))
    kept = client.get_weights()  # the site keeps its own weights; only the upload changed
    assert update.metrics["halved"] == 1.0
    assert all(
        torch.equal(update.weights[k], kept[k] / 2) for k in kept if kept[k].is_floating_point()
    )


def test_bf16_mixed_precision_trains_through_lightning(tiny_config, tmp_path):
    from fedbcs_lightning.api import fit
    from fedbcs_lightning.config import merge

    config = merge(tiny_config, {"run": {"precision": "bf16-mixed"}, "train": {"rounds": 1}})
    run = fit(config, tmp_path / "run", progress=False)
    loss = run.result.history[0]["train"]["site1"]["loss/total"]
    assert torch.isfinite(torch.tensor(loss))
    assert all(v.dtype != torch.bfloat16 for v in run.result.last_weights.values())


def test_channels_last_and_compile_train_the_same_model(tiny_config):
    from fedbcs_lightning.api import InProcess
    from fedbcs_lightning.config import merge
    from fedbcs_lightning.methods import Instruction

    def one_round(**run):
        setup = InProcess().prepare(merge(tiny_config, {"run": run}))
        client = setup.clients[0]
        update = client.fit(Instruction(setup.initial_weights, server_round=1))
        return client, update.weights

    start = InProcess().prepare(tiny_config).initial_weights
    _, plain = one_round()
    client, nhwc = one_round(channels_last=True)
    conv = next(m for m in client.module.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    compiled_client, compiled = one_round(compile=True)
    assert compiled_client.module.features is not compiled_client.module.backbone.forward_features
    for weights in (nhwc, compiled):
        assert weights.keys() == plain.keys()  # nothing renamed: checkpoints stay plain
        keys = [k for k, v in plain.items() if v.is_floating_point()]
        moved = torch.cat([(plain[k] - start[k]).flatten() for k in keys]).norm()
        apart = torch.cat([(weights[k] - plain[k]).flatten() for k in keys]).norm()
        assert apart < 0.1 * moved  # rounding apart (Adam turns it into small step changes)


class EpochsSeen(ClientHook):
    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, module, batch, output, epoch):
        self.steps.append((epoch, module.global_step))


def test_a_client_keeps_its_lightning_trainer_and_each_round_starts_afresh():
    cfg = resolve(
        options={
            "data": {"image_size": 32, "synthetic": {"sites": 1, "images_per_site": 10}},
            "model": {"width": 4},
            "train": {"batch_size": 4, "local_epochs": 2},
        }
    )
    kept, fresh = (_federation(cfg, FedAvg())[0] for _ in range(2))
    seen = EpochsSeen()
    kept.module.hooks.append(seen)
    weights = kept.get_weights()
    for server_round in (1, 2):
        fresh._trainer = None  # a new Lightning Trainer every round, as before
        instruction = FedAvg().configure_train(server_round, weights, [kept.name])[kept.name]
        a, b = kept.fit(instruction), fresh.fit(instruction)
        assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
        assert a.metrics == b.metrics
        weights = a.weights
    trainer = kept._trainer
    assert trainer is not None and kept.fit(instruction) and kept._trainer is trainer
    # every round counts epochs and steps from 0, as a new Trainer would
    per_round = len(seen.steps) // 3
    assert seen.steps[:per_round] == seen.steps[per_round : 2 * per_round]
    assert seen.steps[0] == (0, 1) and seen.steps[per_round - 1][0] == 1  # after step 1
