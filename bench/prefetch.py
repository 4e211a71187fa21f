"""Making the next batch while the current one trains, and getting images onto the training device.

``Ahead`` makes the items of one epoch strictly in order, on one background thread, one item ahead of
the training loop: batch b + 1's views are drawn while batch b's steps compute. The draws therefore
come from the same seeded generator in the same order as without it, so a seeded run is bit for bit
the same with and without the overlap (resume included: one ``Ahead`` per epoch, which never reaches
into the next epoch's generator). A failure in the thread is raised in the training thread at the
batch it belongs to; the thread is joined on every way out (end of epoch, an exception, Ctrl-C or
SIGTERM arriving as ``KeyboardInterrupt``), after at most the item it is making.

On the CPU the thread runs its torch ops on one OpenMP thread of its own. The trainer turns it on by
default at every thread count: on a quiet 2-core machine it hides the views at one torch thread, and at
two, where both cores train, it costs about what making them inline does (docs/performance.md, "End to
end"). On CUDA it enqueues its copies and kernels on a side stream; the training stream waits for an
item's event before using it, and the item's tensors are recorded on the training stream for the
caching allocator.

``DeviceImages`` is how a batch's uint8 images reach the device: the whole decoded cache copied to the
GPU once when it fits (then a batch is a gather on the device, with no host work and no transfer),
else each batch's rows gathered into pinned host memory and copied with ``non_blocking``.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import numpy as np
import torch

T = TypeVar("T")
POLL_SECONDS = 0.5  # how often a waiting training thread checks that the prefetch thread is alive
# The decoded cache is copied to a GPU only if it takes at most this share of the memory free when the
# trainer is built (the model is on the device by then; activations and optimizer state are not).
DEVICE_CACHE_SHARE = 0.25


class Ahead(Generic[T]):
    """``make(0)``, ..., ``make(count - 1)``, made in that order in a background thread, at most
    ``depth`` items ahead of the consumer; ``depth=0`` makes each item when it is asked for, in the
    caller's thread (the same items: only the timing differs). Use as a context manager, so the
    thread is joined however the loop ends."""

    def __init__(
        self,
        make: Callable[[int], T],
        count: int,
        *,
        depth: int = 1,
        device: torch.device | None = None,
        threads: int | None = None,
        name: str = "prefetch",
    ) -> None:
        if depth < 0:
            raise ValueError(f"prefetch depth must be >= 0, got {depth}")
        self._make, self._count, self._taken = make, count, 0
        device = device if device is not None else torch.device("cpu")
        if device.type == "cuda" and device.index is None:  # the thread works on the caller's current device
            device = torch.device("cuda", torch.cuda.current_device())
        self._device = device
        self._threads = threads
        self._results: queue.Queue[tuple[T | None, Any, BaseException | None]] = queue.Queue()
        self._permits = threading.Semaphore(depth)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._main_threads = torch.get_num_threads()
        if depth > 0 and count > 0:
            self._thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._thread.start()

    def __enter__(self) -> Ahead[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._taken >= self._count:
            raise StopIteration
        if self._thread is None:
            item = self._make(self._taken)
            self._taken += 1
            return item
        item, event, error = self._receive()
        if error is not None:
            self.close()
            raise error
        self._taken += 1
        self._permits.release()  # the thread may start the item after the next one
        if event is not None:  # CUDA: the training stream waits for the side stream's work on this item
            stream = torch.cuda.current_stream(self._device)
            stream.wait_event(event)
            for tensor in tensors_in(item):
                if tensor.device.type == "cuda":
                    tensor.record_stream(stream)
        return item  # type: ignore[return-value]

    def _receive(self) -> tuple[T | None, Any, BaseException | None]:
        """The next result; never waits forever on a thread that died without leaving one."""
        while True:
            try:
                return self._results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self._thread is None or not self._thread.is_alive():
                    try:  # it may have put its last result just before it ended
                        return self._results.get_nowait()
                    except queue.Empty:
                        raise RuntimeError("the prefetch thread ended without making the next batch") from None

    def _work(self) -> None:
        try:
            if self._threads is not None:
                torch.set_num_threads(self._threads)  # this thread's OpenMP team only; restored in close()
            side = None
            if self._device.type == "cuda":
                torch.cuda.set_device(self._device)
                side = torch.cuda.Stream(self._device)
            for index in range(self._count):
                self._permits.acquire()
                if self._stopping:
                    return
                if side is None:
                    self._results.put((self._make(index), None, None))
                    continue
                with torch.cuda.stream(side):
                    item = self._make(index)
                    event = torch.cuda.Event()
                    event.record(side)
                self._results.put((item, event, None))
        except BaseException as error:  # noqa: BLE001 - handed to the training thread, which raises it
            self._results.put((None, None, error))

    def close(self) -> None:
        """Stop making items and join the thread (it finishes the item in hand first). Idempotent.

        An interrupt that arrives during the join is held until the thread has ended, then raised."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        self._permits.release()
        interrupted: BaseException | None = None
        while thread.is_alive():
            try:
                thread.join()
            except BaseException as error:  # noqa: BLE001 - a second Ctrl-C: finish joining, then raise it
                interrupted = interrupted or error
        if self._threads is not None:
            # torch.set_num_threads in the thread also set the default for threads started later; put it back.
            torch.set_num_threads(self._main_threads)
        if interrupted is not None:
            raise interrupted


def tensors_in(item: Any) -> Iterator[torch.Tensor]:
    """Every tensor in ``item``: a tensor, or dataclasses, mappings, lists and tuples of them (nested)."""
    if isinstance(item, torch.Tensor):
        yield item
    elif dataclasses.is_dataclass(item) and not isinstance(item, type):
        for field in dataclasses.fields(item):
            yield from tensors_in(getattr(item, field.name))
    elif isinstance(item, Mapping):
        for value in item.values():
            yield from tensors_in(value)
    elif isinstance(item, (list, tuple)):
        for value in item:
            yield from tensors_in(value)


def cache_fits(nbytes: int, free_bytes: int) -> bool:
    """Whether a decoded cache of ``nbytes`` should live on a device with ``free_bytes`` free: at most
    ``DEVICE_CACHE_SHARE`` of it, the rest left to training. ISIC 2018 at 224 px (10,015 images, 1.5 GB)
    fits a card with 6 GB free; ISIC 2017 at 64 px (2,000 images, 25 MB) fits any."""
    return 0 <= nbytes <= DEVICE_CACHE_SHARE * free_bytes


def free_device_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device, None elsewhere (the CPU reads the memory-mapped cache directly)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


class DeviceImages:
    """A split's uint8 images ``[N, 3, S, S]`` (a memory-mapped cache) as batches on ``device``.

    ``resident``: the whole array was copied to the device once (CUDA, when ``cache_fits``), and a batch
    is a gather there. Otherwise each batch is read on the host: on the CPU straight into a fresh tensor
    (no copy beyond the read); for another device into one of ``slots`` pinned buffers, then copied with
    ``non_blocking``. A buffer is reused only once its previous copy has finished (its event), so a
    copy still in flight is never overwritten, while the host never waits for the training stream.
    """

    def __init__(
        self,
        images: np.ndarray,
        device: torch.device,
        *,
        resident: bool | None = None,
        slots: int = 2,
        pin: bool | None = None,
    ) -> None:
        self.images, self.device = images, device
        if resident is None:
            free = free_device_memory(device)
            resident = free is not None and cache_fits(images.nbytes, free)
        self._on_device = None
        if resident:
            try:
                self._on_device = torch.from_numpy(np.ascontiguousarray(images)).to(device)
            except torch.OutOfMemoryError:  # free memory was misjudged (another process took some): stream
                resident = False
        self.resident = resident
        self._staged = device.type != "cpu" and not resident
        self._pin = (device.type == "cuda") if pin is None else pin
        self._slots = slots
        self._buffers: list[torch.Tensor] = []
        self._events: list[Any] = []
        self._next = 0

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        """The images at ``index`` (a CPU int64 tensor), uint8 on the device."""
        if self._on_device is not None:
            return self._on_device.index_select(0, index.to(self.device, non_blocking=True))
        rows = index.numpy()
        if not self._staged:
            return torch.from_numpy(np.ascontiguousarray(self.images[rows]))
        return self.stage(rows)

    def stage(self, rows: np.ndarray) -> torch.Tensor:
        """Read ``rows`` into the next staging buffer and copy it to the device without blocking."""
        slot = self._next
        self._next = (slot + 1) % self._slots
        count = len(rows)
        if len(self._buffers) <= slot or self._buffers[slot].shape[0] < count:
            buffer = torch.empty((count, *self.images.shape[1:]), dtype=torch.uint8, pin_memory=self._pin)
            self._buffers[slot : slot + 1] = [buffer]
            self._events[slot : slot + 1] = [None]
        elif self._events[slot] is not None:
            self._events[slot].synchronize()  # the copy out of this buffer, two batches ago, has landed
        staging = self._buffers[slot][:count]
        np.take(self.images, rows, axis=0, out=staging.numpy())
        out = torch.empty(staging.shape, dtype=torch.uint8, device=self.device)
        out.copy_(staging, non_blocking=True)
        if self.device.type == "cuda":
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
            self._events[slot] = event
        return out
