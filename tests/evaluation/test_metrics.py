import math

import numpy as np
import torch

from fedbcs_lightning.evaluation.metrics import (
    assd_per_image,
    dice_per_image,
    evaluate,
    hd95_per_image,
    mean_over_sites,
)


class FixedPredictor(torch.nn.Module):
    """Returns logits whose argmax is the label map stored in the input's first channel."""

    def __init__(self, classes):
        super().__init__()
        self.classes = classes
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        labels = x[:, 0].long()
        return torch.nn.functional.one_hot(labels, self.classes).permute(0, 3, 1, 2).float()


def test_dice_hand_cases():
    pred = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]], [[2, 2, 2, 2]]])
    target = torch.tensor([[[1, 0, 0, 0]], [[0, 0, 0, 0]], [[2, 2, 2, 2]]])
    d = dice_per_image(pred, target, [1])
    assert torch.allclose(d, torch.tensor([2 / 3, 1.0, 1.0], dtype=torch.float64))
    union = dice_per_image(pred, target, [1, 2])  # a region made of two labels
    assert math.isclose(union[2].item(), 1.0)


def test_evaluate_regions_and_mean():
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 4:12, 4:12] = 1
    target[:, 6:10, 6:10] = 2
    pred = target.clone()
    pred[1, 6:10, 6:10] = 1  # second image misses the cup entirely
    images = pred[:, None].float()
    scores = evaluate(FixedPredictor(3), [(images, target)], {"disc": [1, 2], "cup": [2]})
    assert math.isclose(scores["dice/disc"], 1.0)
    assert math.isclose(scores["dice/cup"], 0.5)  # (1 + 0) / 2 images
    assert math.isclose(scores["dice"], 0.75)


def test_hd95_from_monai_on_a_known_shift():
    target = torch.zeros(1, 32, 32, dtype=torch.long)
    target[0, 8:16, 8:16] = 1
    pred = torch.roll(target, shifts=3, dims=2)  # shifted 3 px
    hd = hd95_per_image(pred, target, [1])[0]
    assert 2.5 <= hd <= 3.0
    assert math.isnan(hd95_per_image(torch.zeros_like(target), target, [1])[0])


def test_evaluate_restores_training_mode():
    model = FixedPredictor(2).train()
    evaluate(model, [(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))], {"x": [1]})
    assert model.training


def test_mean_over_sites_ignores_nan():
    out = mean_over_sites({"a": {"dice": 0.5, "hd95": np.nan}, "b": {"dice": 1.0, "hd95": 4.0}})
    assert out == {"dice": 0.75, "hd95": 4.0}


def test_assd_hand_case():
    """Lines one pixel wide are all boundary. Prediction: column 5, rows 2-6; truth: column
    7, rows 2-4. Truth -> prediction: 2, 2, 2. Prediction -> truth: 2, 2, 2 (rows 2-4),
    sqrt(2^2 + 1^2) (row 5), sqrt(2^2 + 2^2) (row 6). ASSD = mean of all eight."""
    pred = torch.zeros(3, 10, 10, dtype=torch.long)
    target = torch.zeros_like(pred)
    pred[0, 2:7, 5] = 1
    target[0, 2:5, 7] = 1
    pred[1, 2:5, 2] = target[1, 2:5, 2] = 1  # identical
    target[2, 2:5, 2] = 1  # nothing predicted
    expected = (6 * 2 + math.sqrt(5) + math.sqrt(8)) / 8
    first, same, missing = assd_per_image(pred, target, [1])
    assert math.isclose(first, expected, rel_tol=1e-6)
    assert same == 0.0 and math.isnan(missing)


def test_evaluate_reports_assd_beside_hd95():
    target = torch.zeros(1, 10, 10, dtype=torch.long)
    pred = torch.zeros_like(target)
    pred[0, 2:7, 5] = 1
    target[0, 2:5, 7] = 1
    scores = evaluate(
        FixedPredictor(2), [(pred[:, None].float(), target)], {"a": [1]}, surface_metrics=True
    )
    expected = (6 * 2 + math.sqrt(5) + math.sqrt(8)) / 8
    assert math.isclose(scores["assd/a"], expected, rel_tol=1e-6)
    assert scores["assd"] == scores["assd/a"] and "hd95/a" in scores
