"""Memory-bounded sliding-window prediction of large scenes (numpy only).

The same algorithm as ``rsport.sliding.predict_scene`` (the original FactSeg/FarSeg evaluation:
``rsport.sliding.windows`` grid, row-major order, each window zero-padded bottom/right to the
divisor, probabilities summed over overlaps and divided by the per-pixel count), but streamed:

* windows are read one by one through a ``read(y0, x0, y1, x1)`` callable (rasterio windowed
  reads for GeoTIFFs), so the scene never exists as a float array;
* the sums and counts are kept only for the rows a later window can still touch: windows come
  row-major, so once a batch is done every row above the next window's top is final; those rows
  are divided and handed to ``emit(y0, y1, probs)`` (windowed writes), and the buffer moves down.

For the same ``predict`` and ``batch`` the result is bit-identical to ``predict_scene``: every
pixel receives the same additions in the same order. The buffer holds ``K x rows x width``
float32 with rows <= window height + (stride x the number of window rows one batch spans).
"""
from __future__ import annotations

import queue
import threading
from typing import Callable

import numpy as np

from rsport.sliding import pad_to_multiple, windows


class RowAccumulator:
    """Sums and counts for rows [base, base + rows) of a ``K x H x W`` map."""

    def __init__(self, num_classes: int, width: int):
        self.num_classes, self.width = num_classes, width
        self.base = 0
        self.total = np.zeros((num_classes, 0, width), np.float32)
        self.count = np.zeros((0, width), np.float32)

    def reserve(self, bottom: int) -> None:
        """Make rows up to ``bottom`` (exclusive) available."""
        extra = bottom - (self.base + self.count.shape[0])
        if extra > 0:
            self.total = np.concatenate([self.total, np.zeros((self.num_classes, extra, self.width), np.float32)], 1)
            self.count = np.concatenate([self.count, np.zeros((extra, self.width), np.float32)], 0)

    def add(self, box, probs: np.ndarray) -> None:
        y0, x0, y1, x1 = box
        self.total[:, y0 - self.base:y1 - self.base, x0:x1] += probs
        self.count[y0 - self.base:y1 - self.base, x0:x1] += 1

    def release(self, limit: int) -> tuple[int, np.ndarray] | None:
        """Divide and drop rows [base, limit); returns (first row, probs [K, n, W]) or None."""
        n = min(limit, self.base + self.count.shape[0]) - self.base
        if n <= 0:
            return None
        probs = self.total[:, :n] / self.count[:n]
        start = self.base
        self.total, self.count = self.total[:, n:].copy(), self.count[n:].copy()
        self.base += n
        return start, probs


def stream_scene(read: Callable[[int, int, int, int], np.ndarray], height: int, width: int,
                 predict: Callable[[np.ndarray], np.ndarray], num_classes: int,
                 emit: Callable[[int, int, np.ndarray], None], *, window=896, stride=512, divisor: int = 32,
                 batch: int = 1, progress: Callable[[int], None] | None = None, overlap: bool = False) -> int:
    """Predict a scene window by window; returns the number of windows.

    Args:
        read: ``read(y0, x0, y1, x1) -> [C, y1 - y0, x1 - x0]`` normalized float32.
        height, width: scene size.
        predict: ``predict(x [N, C, h, w]) -> probs [N, K, h, w]`` on padded windows.
        num_classes: K.
        emit: ``emit(y0, y1, probs [K, y1 - y0, width])``, called for consecutive row blocks
            from the top; together they cover the scene once.
        window, stride, divisor, batch: as in ``rsport.sliding.predict_scene``.
        progress: called with the number of windows finished by each ``predict`` call.
        overlap: read the next batch and emit finished rows in two helper threads while
            ``predict`` runs (same calls in the same order, so the same result).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    boxes = windows(height, width, window, stride)
    chunks = [boxes[start:start + batch] for start in range(0, len(boxes), batch)]
    acc = RowAccumulator(num_classes, width)

    def load(chunk):
        x = np.stack([read(*box) for box in chunk]).astype(np.float32, copy=False)
        return pad_to_multiple(x, divisor)

    with _Pipeline(load, emit, overlap) as pipe:
        pipe.prefetch(chunks)
        done = 0
        for chunk in chunks:
            x, (h, w) = pipe.next_input()
            out = np.asarray(predict(x))
            if out.shape != (len(chunk), num_classes) + x.shape[2:]:
                raise ValueError(f"predict returned shape {out.shape}, expected "
                                 f"{(len(chunk), num_classes) + x.shape[2:]} for input {x.shape}")
            acc.reserve(max(box[2] for box in chunk))
            for box, probs in zip(chunk, out[:, :, :h, :w]):
                acc.add(box, probs)
            done += len(chunk)
            released = acc.release(boxes[done][0] if done < len(boxes) else height)
            if released is not None:
                first, probs = released
                pipe.emit(first, first + probs.shape[1], probs)
            if progress is not None:
                progress(len(chunk))
    return len(boxes)


class _Pipeline:
    """Reading ahead and writing behind ``predict``. Without ``overlap`` everything runs inline;
    with it, one thread loads the next input (queue of 1: at most one batch ahead, so memory stays
    bounded) and one thread runs ``emit`` in order (queue of 1 row block). An exception in either
    thread is raised in the caller at the next exchange or on exit."""

    def __init__(self, load, emit, overlap: bool):
        self.load, self._emit, self.overlap = load, emit, overlap
        self.inputs: queue.Queue = queue.Queue(maxsize=1)
        self.outputs: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.pending: list = []

    def prefetch(self, chunks) -> None:
        if not self.overlap:
            self.pending = list(chunks)
            return
        self.threads.append(threading.Thread(target=self._reader, args=(list(chunks),), daemon=True))
        self.threads.append(threading.Thread(target=self._writer, daemon=True))
        for t in self.threads:
            t.start()

    def _put(self, q: queue.Queue, item) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _reader(self, chunks) -> None:
        try:
            for chunk in chunks:
                if not self._put(self.inputs, ("ok", self.load(chunk))):
                    return
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            self._put(self.inputs, ("error", err))

    def _writer(self) -> None:
        while True:
            try:
                item = self.outputs.get(timeout=0.1)
            except queue.Empty:
                if self.stop.is_set():
                    return
                continue
            if item is None or self.stop.is_set():
                return
            try:
                self._emit(*item)
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                self.error = err
                self.stop.set()
                return

    def next_input(self):
        if not self.overlap:
            return self.load(self.pending.pop(0))
        while True:
            self._raise()
            try:
                kind, value = self.inputs.get(timeout=0.1)
            except queue.Empty:
                continue
            if kind == "error":
                raise value
            return value

    def emit(self, y0: int, y1: int, probs: np.ndarray) -> None:
        if not self.overlap:
            self._emit(y0, y1, probs)
            return
        self._raise()
        if not self._put(self.outputs, (y0, y1, probs)):
            self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def __enter__(self) -> "_Pipeline":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if not self.overlap:
            return
        if exc_type is None:
            self._put(self.outputs, None)  # the writer finishes the queued rows, then stops
        else:
            self.stop.set()
        for t in self.threads:
            t.join()
        if exc_type is None:
            self._raise()


def flip_tta(predict: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Test-time augmentation: the mean of the probabilities of the window, its horizontal flip
    and its vertical flip (each flipped back), as PaddleSeg's ``--aug_pred --flip_horizontal
    --flip_vertical``."""

    def augmented(x: np.ndarray) -> np.ndarray:
        out = np.asarray(predict(x), np.float32).copy()
        out += np.asarray(predict(np.ascontiguousarray(x[..., ::-1])))[..., ::-1]
        out += np.asarray(predict(np.ascontiguousarray(x[..., ::-1, :])))[..., ::-1, :]
        return out / np.float32(3)

    return augmented
