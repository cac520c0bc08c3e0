"""Latency percentiles in constant memory, so the bench itself does not grow with ``--ops``."""

from __future__ import annotations

import math
from collections.abc import Iterable

# Buckets 1% wide on a log scale: ~1,400 buckets cover 1 us .. 1,000 s.
_GROWTH = math.log(1.01)
_FLOOR_S = 1e-6


class LatencyHistogram:
    """Counts per logarithmic bucket; percentiles are accurate to about 1%."""

    __slots__ = ("_counts", "count")

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self.count = 0

    def record(self, seconds: float) -> None:
        bucket = int(math.log(max(seconds, _FLOOR_S) / _FLOOR_S) / _GROWTH)
        self._counts[bucket] = self._counts.get(bucket, 0) + 1
        self.count += 1

    def record_all(self, seconds: Iterable[float]) -> None:
        for value in seconds:
            self.record(value)

    def merge(self, other: LatencyHistogram) -> None:
        for bucket, n in other._counts.items():
            self._counts[bucket] = self._counts.get(bucket, 0) + n
        self.count += other.count

    def percentile_ms(self, fraction: float) -> float:
        """The latency (ms) at or below which ``fraction`` of the samples fall; 0.0 if empty."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for bucket in sorted(self._counts):
            seen += self._counts[bucket]
            if seen >= rank:
                # The bucket's geometric midpoint.
                return _FLOOR_S * math.exp((bucket + 0.5) * _GROWTH) * 1000.0
        raise AssertionError("unreachable: rank <= count")
