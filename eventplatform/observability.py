"""Prometheus exposition for every process kind (multiprocess-aware)."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.registry import REGISTRY


def metrics_registry() -> CollectorRegistry:
    """The registry to expose: the aggregate of all process files in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def start_metrics_server(port: int, addr: str = "127.0.0.1") -> None:
    start_http_server(port, addr=addr, registry=metrics_registry())
