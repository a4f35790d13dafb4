import math

import numpy as np
import pytest
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


def test_dice_per_case_pools_the_pixels_of_a_cases_slices():
    # case a: a large slice predicted right and an edge slice with 2 target pixels missed;
    # case b: two slices without prostate, predicted empty
    target = torch.zeros(4, 8, 8, dtype=torch.long)
    target[0, :, :4] = 1
    target[1, 0, :2] = 1
    pred = target.clone()
    pred[1] = 0
    batches = [(pred[:2, None].float(), target[:2]), (pred[2:, None].float(), target[2:])]
    regions = {"prostate": [1]}
    per_slice = evaluate(FixedPredictor(2), batches, regions)["dice"]
    per_case = evaluate(FixedPredictor(2), batches, regions, cases=["a", "a", "b", "b"])["dice"]
    assert math.isclose(per_slice, (1 + 0 + 1 + 1) / 4)
    assert math.isclose(per_case, (2 * 32 / (32 + 34) + 1) / 2)
    with pytest.raises(ValueError):  # one case per image
        evaluate(FixedPredictor(2), batches, regions, cases=["a", "b"])


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


class PerPixel(torch.nn.Module):
    """A 1x1 convolution: the same logits whether tiled or whole."""

    input_divisor = 16

    def __init__(self, norm=None):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.norm = norm
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape[-2:]))
        out = self.conv(x)
        return self.norm(out) if self.norm is not None else out


def test_whole_images_go_through_in_one_padded_pass_or_as_windows():
    from fedbcs_lightning.evaluation.metrics import predict_logits

    torch.manual_seed(0)
    image = torch.rand(1, 3, 40, 56)
    model = PerPixel().eval()
    whole = predict_logits(model, image, window=32)
    assert model.calls == [(48, 64)]  # padded to the divisor, cropped back
    assert whole.shape == (1, 2, 40, 56)
    model.calls.clear()
    tiled = predict_logits(model, image, window=32, whole_image_pixels=100)  # over budget
    assert set(model.calls) == {(32, 32)}
    assert torch.allclose(whole, tiled, atol=1e-5)  # a per-pixel model: the same logits
    stateless = PerPixel(torch.nn.BatchNorm2d(2, track_running_stats=False)).eval()
    predict_logits(stateless, image, window=32)
    assert set(stateless.calls) == {(32, 32)}  # batch statistics: windows, as in training
    fixed = PerPixel()
    fixed.fixed_input_size = True
    predict_logits(fixed.eval(), image, window=32)
    assert set(fixed.calls) == {(32, 32)}


def test_eval_every_validates_every_nth_and_the_last_round(tmp_path, tiny_config):
    import io
    import json

    from fedbcs_lightning.api import fit
    from fedbcs_lightning.callbacks import RoundProgress
    from fedbcs_lightning.config import merge

    config = merge(tiny_config, {"train": {"rounds": 3}, "run": {"eval_every": 2, "log_images": 0}})
    lines = io.StringIO()
    run = fit(config, run_dir=tmp_path, callbacks=[RoundProgress(lines)], progress=False)
    assert ["val" in record for record in run.result.history] == [False, True, True]
    assert run.result.best_round in (2, 3)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["round"] for r in rows if r["split"] == "val"}) == [2, 3]
    printed = [line for line in lines.getvalue().splitlines() if line.startswith("round ")]
    assert "(not validated)" in printed[0] and "val dice" in printed[1]


class Fixed(torch.nn.Module):
    """A model whose prediction is the label map ``predicted``, whatever the input."""

    def __init__(self, predicted):
        super().__init__()
        self.predicted = predicted
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.nn.functional.one_hot(self.predicted, 3).permute(0, 3, 1, 2).float()


def test_vertical_cup_to_disc_ratio_error_is_reported_for_disc_and_cup_regions():
    import torch

    from fedbcs_lightning.evaluation.metrics import evaluate, vertical_cdr

    truth = torch.zeros(2, 20, 20, dtype=torch.long)
    truth[:, 2:18, 4:16] = 1  # disc: 16 rows
    truth[:, 6:14, 7:13] = 2  # cup: 8 rows, vCDR 0.5
    predicted = truth.clone()
    predicted[1, 4:16, 7:13] = 2  # the second image's cup is 12 rows: vCDR 0.75
    assert vertical_cdr(truth, [1, 2], [2]).tolist() == [0.5, 0.5]
    assert vertical_cdr(predicted, [1, 2], [2]).tolist() == [0.5, 0.75]
    empty = torch.zeros(1, 20, 20, dtype=torch.long)
    assert vertical_cdr(empty, [1, 2], [2]).tolist() == [0.0]  # no disc found: ratio 0

    regions = {"disc": [1, 2], "cup": [2]}
    batch = [(torch.zeros(2, 3, 20, 20), truth)]
    scores = evaluate(Fixed(predicted), batch, regions, surface_metrics=True)
    assert scores["vcdr_error"] == pytest.approx(0.125)  # mean of 0 and 0.25
    assert "vcdr_error" not in evaluate(Fixed(predicted), batch, regions)  # validation: Dice only
    assert "vcdr_error" not in evaluate(Fixed(predicted), batch, {"cup": [2]}, surface_metrics=True)


def test_largest_component_post_processing_removes_stray_disc_and_cup_blobs():
    import torch

    from fedbcs_lightning.evaluation.metrics import evaluate

    truth = torch.zeros(1, 24, 24, dtype=torch.long)
    truth[0, 4:16, 4:16] = 1
    truth[0, 7:13, 7:13] = 2
    predicted = truth.clone()
    predicted[0, 20:23, 20:23] = 2  # a stray cup far outside the disc
    predicted[0, 4:6, 14:16] = 2  # a stray cup inside the disc's rim

    regions = {"disc": [1, 2], "cup": [2]}
    batch = [(torch.zeros(1, 3, 24, 24), truth)]
    raw = evaluate(Fixed(predicted), batch, regions, surface_metrics=True)
    kept = evaluate(Fixed(predicted), batch, regions, surface_metrics=True, largest_component=True)
    assert raw["dice/cup"] < 1 and raw["vcdr_error"] > 0
    assert kept["dice/disc"] == 1.0 and kept["dice/cup"] == 1.0 and kept["vcdr_error"] == 0.0
