"""Concurrent requests' pictures embedded together: a queue with a short maximum wait.

One model call for many requests costs much less than one call each (the
network runs a batch in about the time of a few pictures). The first picture
to arrive waits at most ``max_wait`` seconds for others, up to ``max_batch``;
the batch then runs in a worker thread, so the event loop never waits on the
model. Model calls run one at a time (a CPU model uses every core already).

Examples:
    >>> import asyncio, numpy as np
    >>> class Doubler:
    ...     def embed(self, items):
    ...         return np.array([[2.0 * x] for x in items], dtype="float32")
    >>> async def main():
    ...     batcher = EmbeddingBatcher(Doubler(), max_wait=0.01)
    ...     results = await asyncio.gather(*(batcher.embed(x) for x in (1, 2, 3)))
    ...     await batcher.close()
    ...     return [float(r[0]) for r in results], batcher.calls
    >>> asyncio.run(main())
    ([2.0, 4.0, 6.0], 1)
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


class EmbeddingBatcher:
    """Embeds pictures of concurrent callers in shared batches.

    Args:
        encoder: Anything with ``embed(list) -> (N, D) array``.
        max_batch: Pictures in one model call at most.
        max_wait: Seconds the first picture of a batch waits for more.
    """

    def __init__(self, encoder: Any, max_batch: int = 32, max_wait: float = 0.005) -> None:
        self.encoder, self.max_batch, self.max_wait = encoder, max_batch, max_wait
        self.calls = 0  # model calls made: fewer than pictures when batching helps
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None
        self._model = ThreadPoolExecutor(max_workers=1, thread_name_prefix="siamkit-embed")

    async def embed(self, picture: Any) -> np.ndarray:
        """The embedding of one picture, computed in a batch with others waiting."""
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((picture, future))
        return await future

    async def embed_many(self, pictures: list[Any]) -> list[np.ndarray]:
        """Several pictures (one request's), each queued like a caller's."""
        return list(await asyncio.gather(*(self.embed(p) for p in pictures)))

    async def close(self) -> None:
        """Stop the worker; callers still waiting get an error."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._model.shutdown(wait=True)

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            await self._answer(batch, loop)

    async def _answer(self, batch: list[tuple[Any, asyncio.Future]], loop: Any) -> None:
        pictures = [picture for picture, _ in batch]
        self.calls += 1
        try:
            vectors = await loop.run_in_executor(self._model, self.encoder.embed, pictures)
        except Exception as err:
            if len(batch) == 1:  # the picture's own error, to its own caller
                if not batch[0][1].done():
                    batch[0][1].set_exception(err)
                return
            for item in batch:  # one bad picture must not fail the others: each alone
                await self._answer([item], loop)
            return
        for (_, future), vector in zip(batch, vectors, strict=True):
            if not future.done():  # a caller that gave up (a closed connection) is skipped
                future.set_result(np.asarray(vector))
