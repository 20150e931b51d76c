"""Dynamic batching of the protocol's inference requests: off by default, as in Triton.

When it is on, the model inputs of concurrent ``POST /v2/models/{name}/infer`` requests for one model, each
already decoded and preprocessed (in its own prediction slot), are gathered until they hold
``max_batch_size`` images or the first of them has waited ``max_queue_delay_s`` and the model's previous
gathered run is over (``instances`` runs of one model at once, one by default, like one Triton model
instance: under load the next batch grows while the current one runs). The gathering then runs as one ONNX
Runtime call, in one slot of the service's PredictionLimiter (when none frees up in time, every request of
the gathering gets the 429), and each request gets its own rows back. A request that alone holds more than
``max_batch_size`` images runs alone.

The run belongs to a task of its own, not to any request: a client that goes away abandons its own answer,
never the others'.

What it buys, measured (``python -m bench.oip --modes oip-binary``, sartaj-4class, 64 test slices,
the 2-core CPU development machine, MRI_MAX_CONCURRENCY=4): nothing on a CPU. ONNX Runtime alone answers
batches of 2 to 16 at about 1.5 times the images per second of one at a time (165-173 against 113 img/s),
but the service without batching already runs up to four single-image calls at once, which fill the cores
as well; with batching (5 ms, 8 images) the throughput fell from 90-93 to 60-62 req/s at concurrency 8 and
from 70-74 to 43-48 req/s at 32, and a lone request waits the whole delay (p50 17 to 24-27 ms). Keep it off
on CPUs; it is meant for a GPU, where one large call costs little more than a small one (not measured yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import anyio
import numpy as np
import numpy.typing as npt

from service.inference import PredictionLimiter
from service.metrics import ServiceMetrics
from service.model_repository import ServedModel

DEFAULT_MAX_BATCH_SIZE = 8
"""Images in one gathered run unless the settings say otherwise (``oip_max_batch_size``)."""


@dataclass(frozen=True)
class BatchedRun:
    """One request's rows of a gathered run, with the run's start, duration and size."""

    probabilities: npt.NDArray[np.float32]  # (n, C)
    scores: npt.NDArray[np.float32] | None  # (n,) or None without a check
    started: float  # time.perf_counter() when the ONNX Runtime run started
    inference_s: float  # the whole gathered run
    batch_size: int  # images in the gathered run


@dataclass(eq=False)
class _Gathering:
    """Requests gathered for one run of one model."""

    model: ServedModel
    parts: list[npt.NDArray[np.float32]] = field(default_factory=list)
    futures: list[asyncio.Future[BatchedRun]] = field(default_factory=list)
    images: int = 0
    full: asyncio.Event = field(default_factory=asyncio.Event)


class DynamicBatcher:
    """Gathers concurrent model inputs per model into one ONNX Runtime run (see the module docstring)."""

    def __init__(
        self,
        limiter: PredictionLimiter,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        instances: int = 1,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue_delay_s <= 0 or instances < 1:
            raise ValueError(
                "dynamic batching needs max_batch_size >= 1, max_queue_delay_s > 0, instances >= 1"
            )
        self.limiter = limiter
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.instances = instances
        self.metrics = metrics
        self._open: dict[str, _Gathering] = {}
        self._instances: dict[str, asyncio.Semaphore] = {}  # gathered runs of one model at once
        self._tasks: set[asyncio.Task[None]] = set()  # the event loop keeps only weak references to tasks

    async def run(self, model: ServedModel, pixels: npt.NDArray[np.float32]) -> BatchedRun:
        """``model.run`` on ``pixels`` (n, height, width, 3), gathered with other requests' inputs."""
        count = int(pixels.shape[0])
        gathering = self._open.get(model.name)
        if gathering is not None and gathering.images + count > self.max_batch_size:
            self._close(gathering)  # run what is gathered; this request starts the next gathering
            gathering = None
        if gathering is None:
            gathering = _Gathering(model)
            self._open[model.name] = gathering
            task = asyncio.get_running_loop().create_task(self._flush(gathering))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        future: asyncio.Future[BatchedRun] = asyncio.get_running_loop().create_future()
        gathering.parts.append(pixels)
        gathering.futures.append(future)
        gathering.images += count
        if gathering.images >= self.max_batch_size:
            self._close(gathering)
        return await future  # cancelled with its request: the run goes on for the others

    def _close(self, gathering: _Gathering) -> None:
        if self._open.get(gathering.model.name) is gathering:
            del self._open[gathering.model.name]
        gathering.full.set()

    async def _flush(self, gathering: _Gathering) -> None:
        try:
            with contextlib.suppress(TimeoutError):  # the delay is up: run what is gathered
                await asyncio.wait_for(gathering.full.wait(), self.max_queue_delay_s)
            model = gathering.model
            # while the model's previous run lasts, the gathering stays open and grows (as in Triton)
            async with self._instances.setdefault(model.name, asyncio.Semaphore(self.instances)):
                self._close(gathering)
                batch = gathering.parts[0] if len(gathering.parts) == 1 else np.concatenate(gathering.parts)
                async with self.limiter.slot():
                    started = time.perf_counter()
                    probabilities, scores = await anyio.to_thread.run_sync(model.run, batch)
                    inference_s = time.perf_counter() - started
        except asyncio.CancelledError:  # the event loop is closing: no request may wait for this run
            self._close(gathering)
            for future in gathering.futures:
                future.cancel()
            raise
        except Exception as error:  # the same refusal (429) or failure for every request of the gathering
            for future in gathering.futures:
                if not future.done():
                    future.set_exception(error)
            return
        if self.metrics is not None:
            self.metrics.inference_duration.labels(model=model.name, version=model.version).observe(
                inference_s
            )
        offset = 0
        for part, future in zip(gathering.parts, gathering.futures, strict=True):
            rows = slice(offset, offset + int(part.shape[0]))
            offset = rows.stop
            if not future.done():
                future.set_result(
                    BatchedRun(
                        probabilities=probabilities[rows],
                        scores=None if scores is None else scores[rows],
                        started=started,
                        inference_s=inference_s,
                        batch_size=int(batch.shape[0]),
                    )
                )
