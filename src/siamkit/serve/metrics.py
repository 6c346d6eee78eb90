"""Prometheus metrics of a service: requests, latency, gallery sizes (``GET /metrics``).

Each app has its own registry, so two apps in one process (tests) count apart.

Examples:
    >>> metrics = ServiceMetrics(lambda: {"staff": 3})
    >>> metrics.observe("/health", "GET", 200, 0.001)
    >>> b'siamkit_gallery_faces{gallery="staff"} 3.0' in metrics.render()
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

#: The content type of :meth:`ServiceMetrics.render`'s text.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _GallerySizes:
    def __init__(self, sizes: Callable[[], dict[str, int]]) -> None:
        self.sizes = sizes

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily("siamkit_gallery_faces", "Faces enrolled in each gallery",
                                   labels=["gallery"])  # fmt: skip
        for name, size in self.sizes().items():
            family.add_metric([name], size)
        yield family


class ServiceMetrics:
    """The counters of one app.

    Args:
        sizes: Called at each scrape: each open gallery's number of faces.
    """

    def __init__(self, sizes: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("siamkit_requests", "Requests answered", ["route", "method",
                                "status"], registry=self.registry)  # fmt: skip
        self.latency = Histogram("siamkit_request_seconds", "Time to answer a request",
                                 ["route"], registry=self.registry)  # fmt: skip
        self.registry.register(_GallerySizes(sizes))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request (``route`` is the path template, not the path)."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
