import torch

from fedbcs_lightning.models.losses import segmentation_loss, soft_dice_loss


def test_perfect_prediction_has_near_zero_loss_and_wrong_one_is_large():
    target = torch.randint(0, 3, (2, 8, 8))
    logits = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 30
    assert segmentation_loss(logits, target) < 1e-3
    wrong = torch.nn.functional.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float() * 30
    assert segmentation_loss(wrong, target) > 1.0


def test_soft_dice_matches_hand_computation():
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]]]])  # probabilities 0.5 everywhere
    target = torch.tensor([[[0, 1]]])
    # per class: inter = 0.5, denominator = 1 + 1 -> dice = 0.5 for both classes
    assert torch.isclose(soft_dice_loss(logits, target), torch.tensor(0.5), atol=1e-4)


def test_loss_has_gradient():
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    segmentation_loss(logits, torch.randint(0, 2, (2, 8, 8))).backward()
    assert logits.grad.abs().sum() > 0
