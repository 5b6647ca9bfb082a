"""An infinite, exactly resumable batch iterator over a ``SegDataset``.

Batch ``k`` is a pure function of (dataset, seed, k, rank, world_size):

* epoch ``e`` visits the samples in ``default_rng([seed, e]).permutation(N)`` order (``arange``
  without shuffle);
* ``drop_last=True``: an epoch has ``N // (B * W)`` steps (the tail that does not fill a global
  batch is dropped); step ``s`` of epoch ``e`` gives rank ``r`` the positions
  ``(s * W + r) * B + j``, j < B, of that order;
* ``drop_last=False``: the orders of epochs 0, 1, ... are concatenated into one stream and batch
  ``k`` of rank ``r`` is stream positions ``(k * W + r) * B + j`` (a batch may span two epochs);
* each sample is ``dataset.get(index, epoch)``, itself a pure function of (seed, index, epoch).

So the result does not depend on ``num_workers``, and ``start_iter`` resumes exactly by
computing batch ``start_iter`` next, without loading the skipped ones. Workers are threads
(decoding in OpenCV / numpy releases the GIL, and threads are safe next to an initialised
torch or paddle runtime, where forking is not); a failure in a worker is re-raised in the
caller as ``DataError`` naming the sample's files.
"""
from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rsport.data.errors import DataError


class Loader:
    """``for x, y in Loader(ds, 2): ...`` -> ``x [B, C, H, W] float32``, ``y [B, H, W] int64``, forever.

    Args:
        dataset: a ``SegDataset`` (anything with ``len``, ``get(index, epoch)``, ``describe(index)``).
        batch_size: samples per batch and rank.
        seed: shuffling seed.
        shuffle: permute the samples every epoch.
        drop_last: see the module docstring.
        num_workers: loader threads (0 = load in the calling thread).
        start_iter: first batch index yielded (resume).
        rank, world_size: this process's share of the global batch.
        prefetch: batches loaded ahead when ``num_workers > 0``.
    """

    def __init__(self, dataset, batch_size: int, *, seed: int = 0, shuffle: bool = True, drop_last: bool = True,
                 num_workers: int = 0, start_iter: int = 0, rank: int = 0, world_size: int = 1, prefetch: int = 2):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or num_workers < 0 or start_iter < 0:
            raise ValueError(f"bad loader arguments: batch_size={batch_size}, rank={rank}, world_size={world_size}, "
                             f"num_workers={num_workers}, start_iter={start_iter}")
        self.dataset, self.batch_size = dataset, batch_size
        self.seed, self.shuffle, self.drop_last = int(seed), shuffle, drop_last
        self.num_workers, self.start_iter = num_workers, start_iter
        self.rank, self.world_size, self.prefetch = rank, world_size, max(1, prefetch)
        self.size = len(dataset)
        if self.size == 0:
            raise DataError("the dataset is empty")
        global_batch = batch_size * world_size
        if drop_last and self.size < global_batch:
            raise DataError(f"the dataset has {self.size} samples, fewer than one global batch "
                            f"({batch_size} x {world_size} ranks); use a smaller batch, a smaller crop or "
                            f"drop_last=False")
        self.steps_per_epoch = self.size // global_batch if drop_last else -(-self.size // global_batch)
        self._orders: dict[int, np.ndarray] = {}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) >= 4:
                self._orders.pop(next(iter(self._orders)))
            self._orders[epoch] = (np.random.default_rng([self.seed, epoch]).permutation(self.size)
                                   if self.shuffle else np.arange(self.size))
        return self._orders[epoch]

    def indices(self, k: int) -> list[tuple[int, int]]:
        """``[(sample index, epoch), ...]`` of batch ``k`` on this rank."""
        b, w, r = self.batch_size, self.world_size, self.rank
        if self.drop_last:
            epoch, step = divmod(k, self.steps_per_epoch)
            return [(int(self._order(epoch)[(step * w + r) * b + j]), epoch) for j in range(b)]
        out = []
        for j in range(b):
            epoch, pos = divmod((k * w + r) * b + j, self.size)
            out.append((int(self._order(epoch)[pos]), epoch))
        return out

    def epoch_of(self, k: int) -> int:
        """0-based epoch of batch ``k`` (of its first sample when a batch spans two)."""
        return self.indices(k)[0][1]

    def _sample(self, index: int, epoch: int):
        try:
            return self.dataset.get(index, epoch)
        except DataError:
            raise
        except Exception as exc:  # anything else a worker hits: name the files, keep the cause
            raise DataError(f"{self.dataset.describe(index)}: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _collate(samples):
        shapes = {x.shape for x, _ in samples}
        if len(shapes) > 1:
            raise DataError(f"samples of different sizes {sorted(shapes)} cannot form a batch; use batch_size 1")
        return np.stack([x for x, _ in samples]), np.stack([y for _, y in samples])

    def batch(self, k: int):
        """Batch ``k``, loaded in the calling thread."""
        return self._collate([self._sample(i, e) for i, e in self.indices(k)])

    def __iter__(self):
        k = self.start_iter
        if self.num_workers == 0:
            while True:
                yield self.batch(k)
                k += 1
        pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="rsport-loader")
        pending = collections.deque()
        try:
            while True:
                while len(pending) < self.prefetch:
                    ahead = k + len(pending)
                    pending.append([pool.submit(self._sample, i, e) for i, e in self.indices(ahead)])
                futures = pending.popleft()
                yield self._collate([f.result() for f in futures])
                k += 1
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def __len__(self) -> int:
        """Steps per epoch (the iterator itself is infinite)."""
        return self.steps_per_epoch
