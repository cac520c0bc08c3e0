"""Pool counters fed by SQLAlchemy pool events, read by ``Database.pool_stats()`` and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.pool import Pool


@dataclass
class PoolCounters:
    """Monotonic counters since the pool was created (plus the current number of waiters)."""

    connections_opened: int = 0
    connections_lost: int = 0
    checkouts: int = 0
    requests_waiting: int = 0
    wait_ms_total: float = 0.0

    def listen(self, pool: Pool) -> None:
        event.listen(pool, "connect", self._on_connect)
        event.listen(pool, "checkout", self._on_checkout)
        event.listen(pool, "invalidate", self._on_invalidate)

    def _on_connect(self, *_: Any) -> None:
        self.connections_opened += 1

    def _on_checkout(self, *_: Any) -> None:
        self.checkouts += 1

    def _on_invalidate(self, *_: Any) -> None:
        self.connections_lost += 1


def pool_snapshot(pool: Pool, counters: PoolCounters) -> dict[str, int | float]:
    """Current pool occupancy plus the counters, as plain numbers."""
    size = getattr(pool, "size", None)
    checkedout = getattr(pool, "checkedout", None)
    overflow = getattr(pool, "overflow", None)
    return {
        "size": size() if callable(size) else 0,
        "checked_out": checkedout() if callable(checkedout) else 0,
        "overflow": max(0, overflow()) if callable(overflow) else 0,
        "connections_opened": counters.connections_opened,
        "connections_lost": counters.connections_lost,
        "checkouts": counters.checkouts,
        "requests_waiting": counters.requests_waiting,
        "wait_ms_total": round(counters.wait_ms_total, 3),
    }
