"""Token buckets, alone or one per client, for the doors' rate limits (docs/architecture.md, *Doors*).

A :class:`Bucket` allows ``rate`` events a second on average and ``burst`` at once. A
:class:`PerClient` keeps one bucket per client key (an IP address) and forgets the least recently
seen client beyond ``max_clients``, so a sender that spoofs many addresses cannot grow it without
bound (a forgotten client starts again with a full bucket, which costs at most one burst).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class Bucket:
    """``rate`` events a second, up to ``burst`` at once; :meth:`take` says whether one may happen now."""

    __slots__ = ("rate", "burst", "level", "stamp", "clock")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.level = float(burst)
        self.stamp = clock()

    def take(self, cost: float = 1.0) -> bool:
        now = self.clock()
        self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level < cost:
            return False
        self.level -= cost
        return True


class PerClient:
    """One :class:`Bucket` per client key; thread-safe; at most ``max_clients`` remembered."""

    def __init__(self, rate: float, burst: float, max_clients: int = 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.max_clients, self.clock = rate, burst, max_clients, clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str, cost: float = 1.0) -> bool:
        """Whether ``client`` may do one more (costing ``cost``) now."""
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                bucket = self._buckets[client] = Bucket(self.rate, self.burst, self.clock)
                if len(self._buckets) > self.max_clients:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(client)
            return bucket.take(cost)
