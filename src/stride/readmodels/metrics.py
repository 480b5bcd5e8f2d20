"""Prometheus metrics of the projection I/O service, in the process-wide default registry."""

from __future__ import annotations

from prometheus_client import Counter

PROJECTIONS_SUPERSEDED = Counter(
    "stride_projection_writes_superseded",
    "Projection writes refused because the stored row has a higher revision "
    "(this process runs older logic than the code that wrote it).",
    ["projection_type", "key"],
)
