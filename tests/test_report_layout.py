"""Nothing in the report's pages prints over other text or leaves the page: every text's drawn box is
checked against every other's and against the page, on the figures with the longest labels."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text

from reports.arms import Methods
from reports.baselines import BaselineScore
from reports.pdf import text_pages
from reports.plots import ablation_figure, batch_size_figure, confusion_figure

CLASSES = ["melanoma", "seborrheic_keratosis", "nevus"]


def text_boxes(fig: Figure) -> list[tuple[str, object]]:
    """The drawn texts and their boxes; a tick outside its axis's range is kept by matplotlib, not drawn."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    undrawn = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not low - 1e-9 <= tick.get_loc() <= high + 1e-9:
                    undrawn.update({id(tick.label1), id(tick.label2)})
    found = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in undrawn]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in found]


def layout_faults(fig: Figure) -> list[str]:
    """Texts that overlap another text (by more than a pixel) or reach past the page."""
    boxes = text_boxes(fig)
    page = fig.bbox
    faults = [
        f"off the page: {text!r}"
        for text, box in boxes
        if box.x0 < page.x0 - 1 or box.y0 < page.y0 - 1 or box.x1 > page.x1 + 1 or box.y1 > page.y1 + 1
    ]
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        overlap_w = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
        overlap_h = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
        if overlap_w > 1 and overlap_h > 1:
            faults.append(f"{a!r} over {b!r}")
    plt.close(fig)
    return faults


def test_confusion_matrices_keep_their_labels_apart():
    matrix = [[17, 21, 79], [6, 39, 45], [46, 29, 318]]
    report = {"class_names": CLASSES, "confusion_matrix": matrix}
    reports = [
        (f"Method {i}", f"method{i}-isic2017-b128-s0\nvalidation balanced accuracy 0.456", report) for i in range(6)
    ]
    picked = "linear: per method, its run with the highest validation balanced accuracy"
    assert layout_faults(confusion_figure(reports, "isic2017", picked)) == []


def test_ablation_labels_fit_and_the_axis_fits_the_data():
    options = [
        "levels=1,2,3, concat=True, schedule=progressive",
        "levels=1, concat=False, schedule=progressive",
        "levels=1,2, concat=False, schedule=progressive",
        "levels=1,2,3, concat=True, schedule=joint",
    ]
    metrics = [
        "knn.test.accuracy",
        "knn.test.balanced_accuracy",
        "linear.test.accuracy",
        "linear.test.balanced_accuracy",
    ]
    rows = []
    for i, option in enumerate(options * 2):
        row = {"setting": "isic2017", "batch_size": 16 * 2 ** (i // 4), "options": option, "main": i % 4 == 0}
        for k, metric in enumerate(metrics):
            row[f"{metric}.mean"] = 0.36 + 0.01 * ((i + k) % 5)
            row[f"{metric}.std"] = 0.005 if i % 4 == 0 else np.nan
        rows.append(row)
    scores = {m: [BaselineScore("majority class", 1 / 3), BaselineScore("chance", 1 / 3)] for m in metrics}
    fig = ablation_figure(pd.DataFrame(rows), "FG-SSL", metrics, scores)
    low, high = fig.axes[0].get_xlim()
    assert 0.30 < low < 1 / 3 and 0.40 < high < 0.45  # not from 0: 0.36-0.40 differences stay visible
    assert "not from 0" in fig.axes[0].get_xlabel()
    assert layout_faults(fig) == []


def test_batch_size_figure_draws_the_baselines_without_squashing_the_data():
    rows = [
        ("isic2017", b, m, False, "", metric, 3, mean + 0.002 * k, 0.01, mean - 0.02, mean + 0.02)
        for k, b in enumerate((16, 32, 64, 128))
        for m, mean in (("a", 0.66), ("b", 0.67))
        for metric in ("knn.test.accuracy",)
    ]
    columns = [
        "setting",
        "batch_size",
        "method",
        "reference",
        "weights",
        "metric",
        "n",
        "mean",
        "std",
        "ci_low",
        "ci_high",
    ]
    stats = pd.DataFrame(rows, columns=columns)
    scores = {"knn.test.accuracy": [BaselineScore("majority class", 0.655), BaselineScore("chance", 1 / 3)]}
    fig = batch_size_figure(stats, "isic2017", ["knn.test.accuracy"], Methods.of(stats), scores)
    ax = fig.axes[0]
    low, _ = ax.get_ylim()
    assert low > 0.6  # chance at 0.333 is named in the legend, not drawn far below the data
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["majority class 0.655", "chance 0.333 (off the axis)"]
    assert layout_faults(fig) == []


@pytest.mark.parametrize("paragraphs", [3, 40])
def test_text_pages_continue_instead_of_running_off(paragraphs: int):
    body = "\n".join(f"- point {i}: " + "a long sentence that wraps " * 12 for i in range(paragraphs))
    pages = text_pages("Report", [("Summary", body), ("Contents", "tables and figures")])
    assert (len(pages) > 1) == (paragraphs == 40)
    for page in pages:
        assert layout_faults(page) == []
