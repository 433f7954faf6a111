"""CPU-bound work (counting primes) run in a bounded process pool so the event loop stays free."""
from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from .errors import Invalid, Unavailable


def count_primes(n: int) -> tuple[int, float]:
    """Count the primes ≤ n with a sieve of Eratosthenes; return (count, CPU seconds used)."""
    started = time.process_time()
    if n < 2:
        return 0, time.process_time() - started
    sieve = bytearray(b"\x01") * (n + 1)
    sieve[0] = sieve[1] = 0
    for i in range(2, math.isqrt(n) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytes(len(range(i * i, n + 1, i)))
    return sieve.count(1), time.process_time() - started


@dataclass(frozen=True)
class ComputeResult:
    """The answer of one job and where its time went."""

    n: int
    primes: int
    elapsed_ms: float
    cpu_ms: float


class ComputeService:
    """A process pool with a cap on jobs running or waiting, so overload is refused, not queued."""

    def __init__(self, workers: int, max_pending: int, max_n: int) -> None:
        self.workers = workers
        self.max_pending = max_pending
        self.max_n = max_n
        self.pending = 0
        # forkserver: children start from a clean process, never from a copy of a running event loop
        self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))

    async def count_primes(self, n: int) -> ComputeResult:
        """Count primes ≤ n in a worker process; Invalid for a bad n, Unavailable when saturated."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= self.max_n:
            raise Invalid("n", f"must be a whole number from 0 to {self.max_n}")
        if self.pending >= self.max_pending:
            raise Unavailable(f"{self.pending} compute jobs are already running or queued", 1)
        self.pending += 1
        started = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            primes, cpu = await loop.run_in_executor(self._pool, count_primes, n)
        finally:
            self.pending -= 1
        return ComputeResult(n=n, primes=primes, elapsed_ms=(time.perf_counter() - started) * 1000,
                             cpu_ms=cpu * 1000)

    async def close(self) -> None:
        """Stop the workers, cancelling jobs that have not started."""
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self._pool.shutdown(wait=True, cancel_futures=True))
