"""Pictures that read: titles on every row, a legend beside the curves (not over them),
named classes in the server charts, a legend on predictions, dashes for missing values."""

import math
from pathlib import Path

import numpy as np

from fedbcs_lightning.evaluation.scoring import Evaluation
from fedbcs_lightning.reporting.plots import (
    Sample,
    dice_curves_figure,
    overlay_grid_figure,
    server_label,
)
from fedbcs_lightning.reporting.visualize import PALETTE, overlay, with_legend


def sample(site, index):
    truth = np.zeros((8, 8), int)
    truth[2:6, 2:6] = 1
    return Sample(site, index, np.random.default_rng(index).random((3, 8, 8)), truth, truth)


def test_every_row_of_the_overlay_sheet_has_its_column_titles():
    figure = overlay_grid_figure({"a": [sample("a", 0)], "b": [sample("b", 3)]}, ["bg", "x"])
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["#0 image", "truth", "prediction", "#3 image", "truth", "prediction"]


def test_the_curves_legend_stands_beside_the_panels():
    rows = [
        {"round": r, "split": "val", "site": s, "dice": 0.1 * r, "dice/cup": 0.05 * r}
        for r in (1, 2, 3)
        for s in ("site1", "mean")
    ]
    figure = dice_curves_figure(rows)
    assert all(ax.get_legend() is None for ax in figure.axes)
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == ["site1", "mean"]


def test_server_charts_name_the_classes():
    assert (
        server_label("clusters/encoder/2", ["background", "rim", "cup"]) == "clusters/encoder/cup"
    )
    assert server_label("fsr/level2/normalised", ["background"]) == "fsr/level2/normalised"


def test_overlays_outline_each_region_and_predictions_carry_a_legend():
    image = np.full((10, 10, 3), 200, np.uint8)
    mask = np.zeros((10, 10), int)
    mask[3:7, 3:7] = 1
    out = overlay(image, mask)
    assert out[3, 3].tolist() == PALETTE[1].tolist()  # the outline in full colour
    assert out[5, 5].tolist() != PALETTE[1].tolist() != out[0, 0].tolist()  # filled, lighter
    legend = with_legend(out, ["background", "nucleus"])
    assert legend.shape == (26, 10, 3) and np.array_equal(legend[:10], out)


def test_missing_values_print_as_a_dash():
    result = Evaluation(Path("x.pt"), 1, "test", "seeded", ["disc"])
    result.sites["a"] = {"dice/disc": 1.0, "dice": 1.0, "hd95/disc": math.nan, "hd95": math.nan}
    table = result.table()
    assert "–" in table and "nan" not in table


def test_fundus_overlays_draw_disc_and_cup_contours_not_filled_areas():
    import numpy as np

    from fedbcs_lightning.reporting.visualize import PALETTE, overlay, to_rgb

    mask = np.zeros((40, 40), np.int64)
    mask[5:35, 5:35] = 1  # rim
    mask[15:25, 15:25] = 2  # cup inside the disc
    image = np.random.default_rng(0).integers(0, 255, (40, 40, 3)).astype(np.uint8)
    plain = to_rgb(image)
    regions = {"disc": [1, 2], "cup": [2]}
    picture = overlay(image, mask, regions=regions)
    assert picture[20, 20].tolist() == plain[20, 20].tolist()  # inside the cup: the image
    assert picture[10, 10].tolist() == plain[10, 10].tolist()  # on the rim: the image
    assert picture[5, 20].tolist() == PALETTE[1].tolist()  # the disc's outer contour
    assert picture[15, 20].tolist() == PALETTE[2].tolist()  # the cup's contour
    painted = overlay(image, mask, regions={"nucleus": [1]})  # not nested: painted areas
    assert painted[10, 10].tolist() != plain[10, 10].tolist()
