"""Report charts on extreme scores: the histogram panels must draw whatever the attack scored."""

from __future__ import annotations

import numpy as np
import pytest

from edgemia.reporting.charts import _bin_edges, histogram_chart

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _report(scores: np.ndarray) -> dict:
    member = np.arange(scores.size) % 2 == 0
    return {"records": {"member": member.tolist(),
                        "scores": {"float": {"native/onnx": {"loss": scores.tolist()}}}}}


@pytest.mark.parametrize("scores", [
    # Scores near 1e30 that differ only in their last bits: 40 bins of distinct float edges do not fit.
    np.nextafter(np.full(200, 1e30), np.inf) * np.where(np.arange(200) % 3 == 0, 1.0, 1.0 + 2e-16),
    np.full(200, 0.25),
    np.full(200, np.inf),
    np.concatenate([np.linspace(-1.0, 1.0, 198), [1e300, -1e300]]),
], ids=["near-1e30", "all-equal", "all-infinite", "huge-outliers"])
def test_histogram_chart_draws_extreme_scores(scores):
    chart = histogram_chart(_report(scores), "loss", "native/onnx")
    assert chart is not None and chart.startswith(PNG_SIGNATURE)


def test_bin_edges_increase_and_cover_the_scores():
    near = np.array([1e30, np.nextafter(1e30, np.inf)])
    for values in (near, np.full(5, 3.0), np.linspace(0.0, 1.0, 1000)):
        edges = _bin_edges(values)
        assert np.all(np.diff(edges) > 0)
        assert edges[0] <= np.percentile(values, 0.5)
        assert edges[-1] >= np.percentile(values, 99.5)
    # Plain scores keep 40 bins, as numpy's own edges over the same range.
    values = np.linspace(0.0, 1.0, 1000)
    low, high = np.percentile(values, [0.5, 99.5])
    np.testing.assert_allclose(_bin_edges(values), np.histogram_bin_edges(values, bins=40, range=(low, high)))
