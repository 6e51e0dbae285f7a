"""Reading a process's Prometheus exporter in tests (the text format, by name and labels)."""

from __future__ import annotations

import re
import urllib.request


def scrape(url: str) -> dict[str, float]:
    """Prometheus text format to {'name{labels}': value}."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def metric(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for key, value in samples.items():
        sample_name, _, label_text = key.partition("{")
        if sample_name != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if all(found.get(k) == v for k, v in labels.items()):
            total += value
    return total
