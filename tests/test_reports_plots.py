"""Charts of the shipped capture: labels that do not overprint, the roof each format is set against, the card
named in every title."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from moeprof.analysis.load import load_capture
from moeprof.analysis.pipeline import analyze
from moeprof.reports import plots

SHIPPED = Path(__file__).resolve().parent.parent / "moeprof" / "data" / "example_capture"


@pytest.fixture(scope="module")
def shipped():
    return analyze(load_capture(SHIPPED))


def _overlaps(a, b) -> bool:
    return not (a.x1 <= b.x0 or b.x1 <= a.x0 or a.y1 <= b.y0 or b.y1 <= a.y0)


@pytest.mark.parametrize("chart", ["roofline_chart", "speedup_chart"])
def test_point_labels_do_not_overprint(chart, shipped, tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, out, stem: figures.append(fig) or [])
    getattr(plots, chart)(shipped, tmp_path)
    [fig] = figures
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_text() and type(t).__name__ == "Annotation"]
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert len(labels) >= 8  # most points are labelled
    for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
        assert not _overlaps(a, b), f"{labels[i].get_text()!r} overprints {labels[j].get_text()!r}"
    inside = ax.get_window_extent(renderer)
    assert all(inside.x0 <= b.x0 and b.x1 <= inside.x1 and inside.y0 <= b.y0 and b.y1 <= inside.y1 for b in boxes)


def test_roofline_names_the_roof_of_each_format(shipped, tmp_path):
    plots.roofline_chart(shipped, tmp_path)
    svg = (tmp_path / "roofline.svg").read_text()
    # The capture's own numbers: which MMA path each format's roofline uses, and mxfp4's weight width.
    layer = json.loads(json.dumps(shipped.layer[["format", "mma_path_model", "weight_bits"]].drop_duplicates()
                                  .to_dict(orient="records")))
    paths = {r["format"]: r["mma_path_model"] for r in layer}
    assert paths == {"bf16": "bf16", "fp8": "fp8", "mxfp4": "bf16"}
    # Roofs from the capture's own ncu rows: per-cycle peak x the measured SM clock.
    k = shipped.capture.kernels
    clock = k["sm_clock_hz"].dropna().median()
    bf16 = k["tensor_ops_bf16_hgmma_peak_per_cycle"].dropna().median() * clock / 1e12
    fp8 = k["tensor_ops_fp8_peak_per_cycle"].dropna().median() * clock / 1e12
    assert f"BF16 roof ({bf16:.0f} TFLOP/s): bf16, mxfp4" in svg and f"FP8 roof ({fp8:.0f} TFLOP/s): fp8" in svg
    assert "mxfp4: 4-bit weights are unpacked to BF16 in the kernel (no FP4 MMA on this GPU)" in svg
    assert "set against the BF16 roof" in svg


def test_every_chart_names_the_card(shipped, tmp_path):
    card = json.loads((SHIPPED / "manifest.json").read_text())["gpu"]["name"]
    paths = plots.write_plots(shipped, tmp_path)
    assert len(paths) == 6
    for stem in ("roofline", "breakdown", "speedup"):
        svg = (tmp_path / f"{stem}.svg").read_text()
        assert f"{card}" in svg.split("</svg>")[0]
