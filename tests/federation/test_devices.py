import pytest
import torch

from fedbcs_lightning.federation.client import evaluation_device


@pytest.mark.parametrize(
    ("accelerator", "cuda", "mps", "expected"),
    [
        ("cpu", True, True, "cpu"),
        ("auto", False, False, "cpu"),
        ("auto", True, True, "cuda"),
        ("auto", False, True, "mps"),
        ("gpu", True, False, "cuda"),
        ("cuda", True, False, "cuda"),
        ("mps", True, True, "mps"),
    ],
)
def test_clients_evaluate_where_lightning_trains(monkeypatch, accelerator, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert evaluation_device(accelerator).type == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_client_scores_on_the_gpu_and_keeps_its_model_on_the_cpu():
    from fedbcs_lightning.api import InProcess
    from fedbcs_lightning.config import resolve
    from fedbcs_lightning.methods.base import Instruction

    config = resolve(
        options={
            "data": {"image_size": 32, "synthetic": {"sites": 1, "images_per_site": 6}},
            "model": {"width": 4},
            "run": {"accelerator": "gpu"},
        }
    )
    setup = InProcess().prepare(config)
    client = setup.clients[0]
    scores = client.evaluate(Instruction(setup.initial_weights, server_round=0))
    assert 0 <= scores["dice"] <= 1
    assert next(client.module.parameters()).device.type == "cpu"
