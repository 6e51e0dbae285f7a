"""The status page's chart as inline SVG, drawn on the server: no JavaScript, nothing from a CDN,
so it renders in an air-gapped admin and in a screenshot test alike."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from apps.support.status.selectors import ChartBucket

BAR_WIDTH = 3
HEIGHT = 160
LEFT, TOP, BOTTOM = 40, 10, 24


def sent_failed_chart_svg(buckets: Sequence[ChartBucket]) -> SafeString:
    """One bucket, one column: the sent bar (green) with the failed bar (red) stacked on it.

    Every bucket gets both rects, zero-height when empty, so the chart always has one column per
    5 minutes and its time axis never stretches. Hover shows the bucket's start and counts.
    """
    peak = max((bucket.sent + bucket.failed for bucket in buckets), default=0) or 1
    width = LEFT + BAR_WIDTH * len(buckets) + 10
    scale = HEIGHT / peak
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="status-chart" width="{width}" '
        f'height="{TOP + HEIGHT + BOTTOM}" role="img" '
        'aria-label="Attempts sent and failed per 5 minutes, last 24 hours">',
        f'<line x1="{LEFT}" y1="{TOP + HEIGHT}" x2="{width - 10}" y2="{TOP + HEIGHT}" stroke="#999"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" font-size="10">{peak}</text>',
        f'<text x="{LEFT - 4}" y="{TOP + HEIGHT}" text-anchor="end" font-size="10">0</text>',
    ]
    for index, bucket in enumerate(buckets):
        x = LEFT + index * BAR_WIDTH
        sent_height = bucket.sent * scale
        failed_height = bucket.failed * scale
        sent_y = TOP + HEIGHT - sent_height
        label = escape(f"{bucket.start:%H:%M} UTC: {bucket.sent} sent, {bucket.failed} failed")
        parts.append(
            f"<g><title>{label}</title>"
            f'<rect class="sent" data-count="{bucket.sent}" x="{x}" y="{sent_y:.1f}" width="{BAR_WIDTH - 1}" '
            f'height="{sent_height:.1f}" fill="#2e7d32"/>'
            f'<rect class="failed" data-count="{bucket.failed}" x="{x}" y="{sent_y - failed_height:.1f}" '
            f'width="{BAR_WIDTH - 1}" height="{failed_height:.1f}" fill="#c62828"/></g>'
        )
        if bucket.start.minute == 0 and bucket.start.hour % 3 == 0:
            parts.append(f'<text x="{x}" y="{TOP + HEIGHT + 14}" font-size="10">{bucket.start:%H:%M}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # built from numbers and escaped labels only
