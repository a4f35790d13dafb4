import torch

from fedbcs_lightning.methods import ClientUpdate, weighted_average
from fedbcs_lightning.methods.fedavg import FedAvg


def test_weighted_by_training_set_size():
    a = ClientUpdate("a", {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}, num_examples=10)
    b = ClientUpdate("b", {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(7)}, num_examples=30)
    weights, _ = FedAvg().aggregate_train(1, [a, b])
    assert torch.allclose(weights["w"], torch.tensor([2.5, 5.0]))
    assert weights["n"].dtype == torch.int64 and weights["n"].item() == 7


def test_custom_weighting_is_injected_not_subclassed():
    a = ClientUpdate("a", {"w": torch.tensor([0.0])}, num_examples=10)
    b = ClientUpdate("b", {"w": torch.tensor([4.0])}, num_examples=30)
    uniform = FedAvg(weight_of=lambda u: 1.0)
    assert torch.allclose(uniform.aggregate_train(1, [a, b])[0]["w"], torch.tensor([2.0]))


def test_subset_of_keys_and_dtype_kept():
    a = ClientUpdate("a", {"w": torch.ones(2, dtype=torch.float16), "x": torch.zeros(1)}, 1)
    out = weighted_average([a, a], keys=["w"])
    assert list(out) == ["w"] and out["w"].dtype == torch.float16


def test_configure_sends_global_weights_to_everyone():
    weights = {"w": torch.zeros(1)}
    inst = FedAvg().configure_train(3, weights, ["a", "b"])
    assert set(inst) == {"a", "b"} and inst["a"].weights is weights and inst["b"].server_round == 3
