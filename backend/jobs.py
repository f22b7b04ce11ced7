"""Jobs: the one door (``admit``) and the one run path (``execute``) shared by the server and the CLI, plus the queue.

``admit`` checks parameters and buffers once (the server on submit, the CLI via ``run_job``); ``execute`` is
decode -> op.run -> OpResult -> buffers in the host's format; ``run_job`` is the two in a row. The
``JobManager`` runs one worker thread per device over one shared queue; workers never touch the ROUTER
socket (zmq sockets are not thread-safe): they sign finished messages and hand them to ``emit``, which
the server's socket thread drains. Results are kept by job id (not by client identity) until released or
evicted (oldest first once ``max_result_bytes`` is exceeded), so a client that reconnects can fetch them.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend.errors import is_out_of_memory, out_of_memory_error
from backend.fairqueue import FairQueue
from backend.guard import scrub_error
from backend.ops import JobCancelled, JobContext, Op, OpError, OpInputs, OpResult, OpSpec, Registry
from backend.wire_images import (
    array_buffer,
    buffer_array,
    decode_image,
    decode_selection,
    encode_image,
    encode_mask,
    encode_preview,
)
from protocol import shm, wire
from protocol.errors import ErrorCode, ProtocolError
from protocol.wire import Buffer, Message

log = logging.getLogger("layeredit.jobs")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
EXPIRED, RELEASED = "expired", "released"  # result dropped: evicted for memory / freed after delivery
FINISHED = frozenset({DONE, FAILED, CANCELLED, EXPIRED, RELEASED})
# out of memory where the op gave no advice of its own (the ops' guards name what to lower for them)
OOM_ADVICE = "Out of memory. Use a smaller selection or image, or a lighter model preset."


# -- the run path ---------------------------------------------------------------------------------
def admit(
    spec: OpSpec, params: dict[str, Any] | None, image: Buffer | None, selection: Buffer | None
) -> dict:
    """The one door, for the server (on submit, before ``accepted``) and the CLI alike: the parameters against the
    schema (defaults filled, ranges, choices, non-empty strings) and everything checkable on the buffers without
    converting them. Returns the checked parameters; what passes here, the op and its pipeline trust."""
    checked = spec.validate(params)
    check_inputs(spec, image, selection)
    return checked


def build_inputs(image: Buffer | None, selection: Buffer | None) -> OpInputs:
    """Decode the host's (admitted) buffers into what ops see."""
    sel = decode_selection(selection, image) if selection is not None else None
    arr = decode_image(image) if image is not None else None
    origin = (image.x, image.y) if image is not None else (0, 0)
    return OpInputs(image=arr, selection=sel, origin=origin)


def check_inputs(spec: OpSpec, image: Buffer | None, selection: Buffer | None) -> None:
    """The buffers an op needs are there, and a selection that was sent selects something on the layer (SPEC.md 4:
    everything checkable without running the op comes first)."""
    if spec.needs_image and image is None:
        raise OpError(ErrorCode.MISSING_INPUT, f"Op '{spec.name}' needs an image; send the layer's pixels.")
    if selection is not None and selection.channels != 1:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"The selection must be one gray channel, got {selection.channels} ({selection.order}); send the "
            "selection mask.",
        )
    reaches = selection is not None and selection_reaches(selection, image)
    if spec.needs_selection and not reaches:
        raise OpError(
            ErrorCode.NO_SELECTION,
            f"Op '{spec.name}' needs a selection over the layer; select the object first, then run it again.",
        )
    if selection is not None and not reaches and not spec.empty_selection_ok:
        raise OpError(
            ErrorCode.NO_SELECTION,
            "The selection does not cover this layer; select the region to edit, or clear the selection to "
            "edit the whole layer.",
        )


def selection_reaches(selection: Buffer, image: Buffer | None) -> bool:
    """True when some selected (> 0) pixel of ``selection`` lies on the image's rectangle (views only)."""
    arr = buffer_array(selection)[:, :, 0]
    if image is not None:
        x0, y0 = max(selection.x, image.x) - selection.x, max(selection.y, image.y) - selection.y
        x1 = min(selection.x + selection.width, image.x + image.width) - selection.x
        y1 = min(selection.y + selection.height, image.y + image.height) - selection.y
        if x1 <= x0 or y1 <= y0:
            return False
        arr = arr[y0:y1, x0:x1]
    return bool((arr > 0).any())  # NaN > 0 is False: a NaN selection is no selection, as decode makes it


def encode_result(result: OpResult, image: Buffer | None) -> list[Buffer]:
    """OpResult -> buffers: the image in the host's format, the mask (then the object mask, if any) as gray u8,
    extras as candidates."""
    out: list[Buffer] = []

    def encode(arr: np.ndarray, role: str) -> Buffer:
        return encode_image(arr, image, role) if image is not None else array_buffer(arr, role=role)

    if result.image is not None:
        out.append(encode(result.image, "image"))
    if result.mask is not None:
        out.append(encode_mask(result.mask, image))
        if result.object_mask is not None:  # second mask buffer: meta["masks"] names the two
            out.append(encode_mask(result.object_mask, image))
    out.extend(encode(extra, "candidate") for extra in result.extra_images)
    return out


def run_job(
    registry: Registry,
    op_name: str,
    params: dict[str, Any] | None,
    image: Buffer | None,
    selection: Buffer | None,
    ctx: JobContext,
) -> tuple[OpResult, list[Buffer], dict[str, Any]]:
    """The CLI's (and tests') run path: the door (``admit``), then ``execute``. Returns the op's result, its
    buffers, the used params."""
    op_cls = registry.get(op_name)
    checked = admit(op_cls.spec, params, image, selection)
    return execute(op_cls, checked, image, selection, ctx)


def execute(
    op_cls: type[Op], checked: dict[str, Any], image: Buffer | None, selection: Buffer | None, ctx: JobContext
) -> tuple[OpResult, list[Buffer], dict[str, Any]]:
    """Run an admitted job (the server's workers: the server admitted it on submit): decode, run, encode."""
    # the op's torch arithmetic is the CLI's on any worker thread, whatever ran on it before (torch not yet
    # imported: it starts on the process's count once it is)
    if "torch" in sys.modules:
        from backend.models.device import pin_torch_threads

        pin_torch_threads()
    result = op_cls().run(build_inputs(image, selection), checked, ctx)
    return result, encode_result(result, image), checked


def error_of(exc: BaseException) -> ProtocolError:
    """Any exception from a run -> a ProtocolError with a stable code and a message saying what to do."""
    if isinstance(exc, ProtocolError):
        return exc
    if isinstance(exc, JobCancelled):
        return ProtocolError(ErrorCode.CANCELLED, "The job was cancelled.")
    if is_out_of_memory(exc):
        return out_of_memory_error(exc, OOM_ADVICE)
    return ProtocolError(
        ErrorCode.INTERNAL, f"Internal error: {type(exc).__name__}: {exc} (see the backend log)."
    )


# -- the queue ------------------------------------------------------------------------------------
@dataclass
class Job:
    id: str
    op: str
    params: dict
    image: Buffer | None
    selection: Buffer | None
    owner: list[bytes]  # ZMQ identity that progress/results go to; a fetch re-attaches it
    submit_id: str | None = None
    state: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    device: str | None = None
    progress: tuple[str, int, int] | None = None
    error: dict | None = None
    final: list[Any] | None = None  # signed result/error frames, ready to send again on fetch
    final_bytes: int = 0
    shm_results: bool = False  # the submitter reads results from shared memory (SPEC.md section 8)
    segment: shm.Segment | None = None  # the stored result's segment; unlinked when the result is dropped
    result_space: dict | None = None  # a client segment offered for the result ({shm, offset, size})
    offered_result: Message | None = None  # a result written there, kept to resend inline if it goes
    final_msg: Message | None = (
        None  # the final message, re-sent on fetch with a fresh id (its parent: the fetch)
    )
    cancel: threading.Event = field(default_factory=threading.Event)
    client: str = ""  # who owns it: "key:<curve key>" remotely, "token:<t>" locally; others see UNKNOWN_JOB
    local: bool = (
        True  # submitted by the local owner (SPEC.md 1); errors to others have server paths scrubbed
    )
    key: str = ""  # where JobManager files it: the id, or id + owner when another owner has that id already

    def describe(self) -> dict:
        """The ``job_status`` content: every field SPEC.md section 4 lists, ``null`` when it does not apply yet
        (no progress yet, nothing failed)."""
        out: dict[str, Any] = {"job": self.id, "op": self.op, "state": self.state, "created": self.created}
        for name in ("started", "finished", "device", "error"):
            out[name] = getattr(self, name)
        out["progress"] = None
        if self.progress:
            out["progress"] = {"stage": self.progress[0], "step": self.progress[1], "total": self.progress[2]}
        return out


Emit = Callable[[Job, list[Any]], None]  # (job, signed frames) -> handed to the socket thread
ModelsFactory = Callable[[str], Any]


def default_models(device: str) -> Any:
    """A ModelManager for ``device`` when backend.models is importable, else None (ops then say what's missing)."""
    try:
        from backend.models import ModelManager
    except ImportError:
        return None
    return ModelManager(device=device)


class JobManager:
    def __init__(
        self,
        registry: Registry,
        key: bytes,
        emit: Emit,
        devices: tuple[str, ...] = ("cpu",),
        max_result_bytes: int = 1 << 30,
        max_queue: int = 64,
        max_records: int = 1000,
        models_factory: ModelsFactory | None = default_models,
        result_ttl_s: float | None = None,
        abandon_after_s: float | None = None,
        max_shm_bytes: int = 0,
        max_queued_per_client: int | None = None,
        max_result_bytes_per_client: int | None = None,
    ):
        self.registry = registry
        self._key = key
        self._emit = emit
        self.devices = devices
        self.max_result_bytes = max_result_bytes
        self.max_queue = max_queue
        # per-owner quotas (one artist cannot fill a shared box's queue or memory); None: 3/4 of the queue,
        # half of the result memory
        self.max_queued_per_client = max_queued_per_client or max(1, max_queue * 3 // 4)
        self.max_result_bytes_per_client = max_result_bytes_per_client or max(1, max_result_bytes // 2)
        self.max_records = max_records
        self._models_factory = models_factory
        self.max_shm_bytes = max_shm_bytes  # result segments alive at once; past it results go inline
        self.shm_bytes = 0
        self.shm_min_bytes = shm.MIN_BYTES  # smaller results go inline
        self._models: dict[str, Any] = {}
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._queue: FairQueue[Job] = FairQueue()  # round-robin across clients, FIFO within one
        self.result_ttl_s = result_ttl_s  # unfetched results older than this are dropped (None: kept)
        self.abandon_after_s = abandon_after_s  # cancel jobs of clients silent this long (None: finish them)
        self._seen: dict[str, float] = {}  # client -> monotonic time of its last message
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for device in self.devices:
            t = threading.Thread(
                target=self._worker, args=(device,), name=f"layeredit-worker-{device}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            for job in self._jobs.values():
                job.cancel.set()
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout)
        with self._lock:  # the backend is going: no one can fetch these results any more
            for job in self._jobs.values():
                self._drop_segment(job)

    # -- requests from the socket thread --------------------------------------------------------
    def submit(self, job: Job) -> int:
        """Queue a job; returns its queue position (0: next to run). QUEUE_FULL past ``max_queue``."""
        with self._lock:
            queued = sum(1 for j in self._jobs.values() if j.state == QUEUED)
            if queued >= self.max_queue:
                raise ProtocolError(
                    ErrorCode.QUEUE_FULL,
                    f"{queued} jobs are waiting already; wait for one to finish and retry.",
                )
            self._check_quota(job.client)
            if self._find(job.id, job.client) is not None:  # only the same owner's ids can collide
                raise ProtocolError(
                    ErrorCode.MALFORMED, f"Job id {job.id!r} is already in use; pick a new one."
                )
            # job ids are per owner: another owner's job with this id is filed apart, and stays invisible
            job.key = job.id if job.id not in self._jobs else f"{job.id}\0{job.client}"
            self._jobs[job.key] = job
            self._trim_records()
        self._queue.put(job)
        # jobs that start before this one, in the fair order; running jobs are not counted (SPEC.md 4)
        return self._queue.position(job, skip=lambda j: j.state != QUEUED)

    def get(self, job_id: str | None, client: str | None = None) -> Job:
        """The job, if it exists and (with ``client``) belongs to that client: another client's job is
        UNKNOWN_JOB, exactly like a job that never existed (its id tells nothing)."""
        with self._lock:
            job = self._find(job_id or "", client)
        if job is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_JOB, f"No job {job_id!r} here (finished long ago, or never sent)."
            )
        return job

    def _check_quota(self, client: str) -> None:
        """QUOTA_EXCEEDED when ``client`` has its share of the queue waiting, or its share of the result memory
        in finished results it has not fetched or released (lock held)."""
        mine = [j for j in self._jobs.values() if j.client == client]
        waiting = sum(1 for j in mine if j.state == QUEUED)
        if waiting >= self.max_queued_per_client:
            raise ProtocolError(
                ErrorCode.QUOTA_EXCEEDED,
                f"You have {waiting} jobs waiting, this backend's limit per client; wait for one to finish "
                "(or cancel one) and retry.",
                {"queued": waiting, "limit": self.max_queued_per_client},
            )
        stored = sum(j.final_bytes for j in mine if j.state == DONE)
        if stored >= self.max_result_bytes_per_client:
            raise ProtocolError(
                ErrorCode.QUOTA_EXCEEDED,
                f"You have {stored >> 20} MiB of finished results stored here, this backend's limit per client; "
                "fetch or release them (or wait for them to expire), then retry.",
                {"stored_bytes": stored, "limit": self.max_result_bytes_per_client},
            )

    def _find(self, job_id: str, client: str | None) -> Job | None:
        """The job ``job_id`` of ``client`` (None: of any owner; tests and tools). Lock held."""
        job = self._jobs.get(job_id)
        if client is None or (job is not None and job.client == client):
            return job
        return self._jobs.get(f"{job_id}\0{client}")

    def cancel(self, job_id: str | None, client: str | None = None) -> Job:
        """Queued jobs end at once; running ones at their next ``check_cancelled`` (between model steps)."""
        job = self.get(job_id, client)
        job.cancel.set()
        with self._lock:
            queued = job.state == QUEUED
            if queued:
                job.state = CANCELLED
        if queued:
            self._finish(job, error_of(JobCancelled()))
        return job

    def fetch(
        self, job_id: str | None, owner: list[bytes], client: str | None = None, reply_to: str | None = None
    ) -> Job:
        """Re-attach the job to ``owner`` (progress/results go there now); RESULT_EXPIRED if evicted."""
        job = self.get(job_id, client)
        with self._lock:
            if job.state in (EXPIRED, RELEASED):
                raise ProtocolError(
                    ErrorCode.RESULT_EXPIRED,
                    f"The result of job {job.id} was dropped (fetched already, or evicted to save memory); "
                    "run the job again.",
                )
            job.owner = owner
            if reply_to is not None and job.state not in FINISHED:
                job.submit_id = reply_to  # its later progress and result answer this fetch
        return job

    def release(self, job_id: str | None, client: str | None = None) -> None:
        """The client has the result: free its memory (a later fetch is RESULT_EXPIRED)."""
        job = self.get(job_id, client)
        with self._lock:
            if job.state == DONE:
                self._drop_result(job, RELEASED)

    def list(self, client: str | None = None) -> list[dict]:
        with self._lock:
            return [j.describe() for j in self._jobs.values() if client is None or j.client == client]

    def seen(self, client: str) -> None:
        """A message from ``client`` arrived (its jobs are not abandoned)."""
        self._seen[client] = time.monotonic()

    def sweep(self) -> None:
        """Bound what clients that vanished leave behind: cancel their jobs after ``abandon_after_s`` of
        silence; drop unfetched results after ``result_ttl_s``. Called from the socket loop every second."""
        now, wall = time.monotonic(), time.time()
        abandoned: list[Job] = []
        with self._lock:
            for job in self._jobs.values():
                if (
                    self.abandon_after_s is not None
                    and job.state in (QUEUED, RUNNING)
                    and now - self._seen.get(job.client, now) > self.abandon_after_s
                ):
                    abandoned.append(job)
                if (
                    self.result_ttl_s is not None
                    and job.state == DONE
                    and wall - (job.finished or wall) > self.result_ttl_s
                ):
                    log.info("job %s: result not fetched within %.0f s, dropped", job.id, self.result_ttl_s)
                    self._drop_result(job, EXPIRED)
            active = {j.client for j in self._jobs.values() if j.state not in FINISHED}
            horizon = max(self.abandon_after_s or 0.0, 3600.0)
            for client in [c for c, t in self._seen.items() if c not in active and now - t > horizon]:
                del self._seen[client]
        for job in abandoned:
            if not job.cancel.is_set():
                log.info(
                    "job %s: its client has been silent for %.0f s, cancelling", job.id, self.abandon_after_s
                )
                self.cancel(job.id, job.client)

    def _drop_result(self, job: Job, state: str) -> None:
        """The result is no longer kept (released, evicted, expired; lock held): its frames, the message they were
        signed from (whose buffers are the op's arrays: a 4096^2 erase's image and masks, ~100 MiB, that a released
        job kept alive until its record was trimmed, up to ``max_records`` jobs later) and its segment."""
        job.final, job.final_msg, job.final_bytes, job.state = None, None, 0, state
        self._drop_result_storage(job)

    def _drop_result_storage(self, job: Job) -> None:
        """Hook for result storage outside the frames (lock held); see _drop_segment where present."""
        drop = getattr(self, "_drop_segment", None)
        if drop is not None:
            drop(job)

    # -- workers -------------------------------------------------------------------------------
    def _worker(self, device: str) -> None:
        while (job := self._queue.get()) is not None:
            with self._lock:
                if job.state != QUEUED:
                    continue
                job.state, job.started, job.device = RUNNING, time.time(), device
            self._run(job, device)

    def _models_for(self, device: str) -> Any:
        if device not in self._models:
            try:
                self._models[device] = self._models_factory(device) if self._models_factory else None
            except Exception:  # a broken model setup must not kill the worker; ops report what is missing
                log.exception("could not create the model manager for %s", device)
                self._models[device] = None
        return self._models[device]

    def _run(self, job: Job, device: str) -> None:
        models = self._models_for(device)
        device = str(getattr(models, "device", None) or device)  # "auto" -> what the manager picked
        with self._lock:
            job.device = device
        ctx = JobContext(
            models=models,
            progress_fn=lambda stage, step, total, preview=None: self._progress(
                job, stage, step, total, preview
            ),
            cancel_check=job.cancel.is_set,
            device=device,
        )
        t0 = time.perf_counter()
        try:
            result, buffers, params = execute(  # job.params: checked by the server's door on submit
                self.registry.get(job.op), job.params, job.image, job.selection, ctx
            )
        except BaseException as exc:  # noqa: B036 - every failure becomes an error reply, never a dead worker
            err = error_of(exc)
            if err.code == ErrorCode.INTERNAL:
                log.exception("job %s (%s) failed", job.id, job.op)
            else:
                log.info("job %s (%s) ended: %s", job.id, job.op, err)
            with self._lock:
                job.state = CANCELLED if err.code == ErrorCode.CANCELLED else FAILED
            self._finish(job, err)
            return
        seconds = time.perf_counter() - t0
        log.info("job %s (%s) done on %s in %.3f s", job.id, job.op, device, seconds)
        content = {"meta": result.meta, "op": job.op, "params": params, "seconds": seconds}
        msg = Message(wire.RESULT, job=job.id, parent=job.submit_id, content=content, buffers=buffers)
        with self._lock:
            job.state = DONE
        self._finish(job, None, msg)

    def _progress(self, job: Job, stage: str, step: int, total: int, preview: np.ndarray | None) -> None:
        job.progress = (str(stage), int(step), int(total))
        buffers = [encode_preview(preview)] if preview is not None else []
        content = {"stage": str(stage), "step": int(step), "total": int(total)}
        msg = Message(wire.PROGRESS, job=job.id, parent=job.submit_id, content=content, buffers=buffers)
        self._emit(job, wire.encode(msg, self._key))

    def _finish(self, job: Job, err: ProtocolError | None, msg: Message | None = None) -> None:
        if err is not None:
            if not job.local:  # a remote owner never reads server paths (issue 13)
                clean = scrub_error(err.to_json())
                err = ProtocolError(err.code, clean["message"], clean.get("details"))
            msg = Message(wire.ERROR, job=job.id, parent=job.submit_id, content=err.to_json())
        assert msg is not None
        shm_inputs = any(b is not None and b.location is not None for b in (job.image, job.selection))
        # SPEC.md 8.2: an offered segment takes the result whenever it fits, whatever its size or the
        # shm_results flag; else, with shm_results, a segment of ours from shm.MIN_BYTES on; else inline
        if msg.buffers and job.result_space and self._to_offered(job, msg):
            job.offered_result = msg  # buffers: the op's arrays, located in the client's segment
        elif job.shm_results and sum(b.nbytes for b in msg.buffers) >= max(1, self.shm_min_bytes):
            self._to_segment(job, msg)
        if shm_inputs and any(b.location is None for b in msg.buffers):
            # an inline result may be a view of the client's input segment (an op returning its input), which
            # the client reuses once this reaches it: store and send a copy
            msg.buffers = [
                b if b.location else dataclasses.replace(b, data=bytes(b.data)) for b in msg.buffers
            ]
        frames = wire.encode(msg, self._key)  # signed here, off the socket thread
        with self._lock:
            job.image = job.selection = None  # let the input frames go
            job.finished = time.time()
            job.error = err.to_json() if err is not None else None
            job.final, job.final_msg = frames, msg
            job.final_bytes = sum(b.nbytes for b in msg.buffers)
            self._evict()
            self._trim_records()  # records submitted while the queue was long become forgettable only now
        self._emit(job, frames)

    def _evict(self) -> None:
        """Drop the oldest finished results until their bytes fit (the newest always stays). Lock held."""
        done = sorted((j for j in self._jobs.values() if j.state == DONE), key=lambda j: j.finished or 0)
        total = sum(j.final_bytes for j in done)
        for j in done[:-1]:
            if total <= self.max_result_bytes:
                break
            log.info("evicting the result of job %s (%d bytes)", j.id, j.final_bytes)
            total -= j.final_bytes
            self._drop_result(j, EXPIRED)

    def _trim_records(self) -> None:
        """Forget the oldest finished jobs beyond ``max_records`` (lock held). Called on submit and on every
        finish: a burst of submits can only be trimmed once its jobs end, else records stay past the bound."""
        finished = [j for j in self._jobs.values() if j.state in FINISHED]
        for j in finished[: max(0, len(self._jobs) - self.max_records)]:
            self._drop_segment(j)
            del self._jobs[j.key or j.id]

    # -- shared-memory results ------------------------------------------------------------------
    def _to_segment(self, job: Job, msg: Message) -> None:
        """Move the result's buffers into one new segment (one copy, in the worker thread) and point the
        descriptors at it; inline frames instead when the shm budget is spent or the segment cannot be made."""
        offsets, total = [], 0
        for b in msg.buffers:
            offsets.append(total)
            total = shm.aligned(total + b.nbytes)
        with self._lock:
            if self.shm_bytes + total > self.max_shm_bytes:
                log.info(
                    "job %s: result sent inline (shared-memory budget %d bytes spent)",
                    job.id,
                    self.max_shm_bytes,
                )
                return
            self.shm_bytes += total
        try:
            seg = shm.Segment.create(total, shm.SERVER_PREFIX)
        except OSError as exc:
            with self._lock:
                self.shm_bytes -= total
            log.warning("job %s: result sent inline (cannot create a segment: %s)", job.id, exc)
            return
        located = []
        for b, off in zip(msg.buffers, offsets, strict=True):
            seg.write(off, b.data)
            loc = {"shm": seg.name, "offset": off, "size": b.nbytes}
            located.append(dataclasses.replace(b, data=seg.view(off, b.nbytes), location=loc))
        msg.buffers = located
        seg.close()  # the client maps it by name; we only keep the name (views die with the message)
        with self._lock:
            job.segment = seg

    def _to_offered(self, job: Job, msg: Message) -> bool:
        """Write the result into the segment the client offered (pages it already has: no fresh shared memory
        on either side); False when it is gone or too small (then our own segment, or inline)."""
        assert job.result_space is not None
        parts, total = [], 0
        for b in msg.buffers:
            parts.append((total, b.data))
            total = shm.aligned(total + b.nbytes)
        try:
            shm.write_into(job.result_space, shm.CLIENT_PREFIX, parts)
        except ProtocolError as exc:
            log.info("job %s: offered result space not used (%s)", job.id, exc)
            return False
        name, base = job.result_space["shm"], job.result_space.get("offset", 0)
        msg.buffers = [
            dataclasses.replace(b, location={"shm": name, "offset": base + off, "size": b.nbytes})
            for b, (off, _) in zip(msg.buffers, parts, strict=True)
        ]
        return True

    def final_frames(self, job: Job, parent: str | None = None) -> list[Any] | None:
        """The stored final message, signed again as a new message answering ``parent`` (the fetch): every
        message has a fresh id. A result written into a client's offered segment is re-sent inline when that
        segment is gone (its client closed before reading it)."""
        with self._lock:
            final, msg, offered = job.final, job.final_msg, job.offered_result
        if final is None or msg is None:
            return None
        buffers = msg.buffers
        if offered is not None and not shm.exists(offered.buffers[0].location["shm"]):
            buffers = [dataclasses.replace(b, location=None) for b in offered.buffers]
        again = dataclasses.replace(msg, id=wire.new_id(), parent=parent, buffers=buffers)
        return wire.encode(again, self._key)

    def _drop_segment(self, job: Job) -> None:
        """Unlink the job's result segment (lock held); clients that mapped it keep their mapping."""
        job.offered_result = None
        seg, job.segment = job.segment, None
        if seg is not None:
            seg.unlink()
            self.shm_bytes -= shm.aligned(seg.size) if seg.size else 0
