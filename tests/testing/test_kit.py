"""The plugin test kit fails where a plugin breaks the contract: a backbone that names the
wrong modules for its levels, a method that forgets state a resume needs."""

import pytest
import torch

from fedbcs_lightning.catalog import BACKBONES, METHODS
from fedbcs_lightning.methods.fedavg import FedAvg
from fedbcs_lightning.models.unet import UNet
from fedbcs_lightning.testing import BackboneContract, MethodContract


class SkipsItsLevels(UNet):
    """Names the decoder blocks as its encoder levels: a transform never feeds the skip."""

    def encoder_level_modules(self):
        return list(self.up_blocks)


class ForgetfulMomentum(FedAvg):
    """Server momentum whose velocity is not in its state: a resume cannot be exact."""

    def __init__(self):
        super().__init__()
        self.velocity = {}
        self.current = {}

    def configure_train(self, server_round, weights, clients):
        self.current = weights
        return super().configure_train(server_round, weights, clients)

    def aggregate_train(self, server_round, updates):
        mean, _ = super().aggregate_train(server_round, updates)
        out = {}
        for key, value in mean.items():
            if value.is_floating_point():
                step = value - self.current[key]
                self.velocity[key] = 0.9 * self.velocity.get(key, torch.zeros_like(step)) + step
                out[key] = self.current[key] + self.velocity[key]
            else:
                out[key] = value
        return out, {}


@pytest.fixture
def registered():
    BACKBONES.register("skips-levels", SkipsItsLevels, options=None)
    METHODS.register("forgetful", ForgetfulMomentum)
    yield
    BACKBONES._entries.pop("skips-levels")
    METHODS._entries.pop("forgetful")


def test_a_backbone_that_names_the_wrong_level_modules_fails_the_contract(registered):
    case = BackboneContract()
    case.backbone, case.model = "skips-levels", {"width": 4}
    case.test_levels_have_the_declared_channels_and_strides()  # the shapes are right
    with pytest.raises(AssertionError):
        case.test_an_encoder_transform_replaces_each_level_and_feeds_the_next()


def test_a_method_that_forgets_its_state_fails_the_resume_contract(registered, tmp_path):
    case = MethodContract()
    case.method = "forgetful"
    case.test_trains_a_federation_whose_updates_the_server_accepts(tmp_path / "a")
    with pytest.raises(AssertionError, match="differs after resume"):
        case.test_resumes_to_the_same_weights(tmp_path / "b")


def test_the_kit_says_what_a_subclass_must_set():
    with pytest.raises(AssertionError, match="set the class attribute backbone"):
        BackboneContract().test_is_a_registered_backbone()
    with pytest.raises(AssertionError, match="set the class attribute method"):
        MethodContract().test_is_a_registered_strategy_with_valid_options()
