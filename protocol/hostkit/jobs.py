"""The job state machine as the UI sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from protocol.errors import ErrorCode
from protocol.hostkit.status import stage_words


class JobState(StrEnum):
    IDLE = "idle"
    STARTING_BACKEND = "starting_backend"
    SUBMITTING = "submitting"
    RUNNING = "running"
    CANCELLING = "cancelling"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


_TERMINAL = {JobState.IDLE, JobState.DONE, JobState.FAILED, JobState.CANCELLED}
_ALLOWED: dict[JobState, set[JobState]] = {
    JobState.IDLE: {JobState.STARTING_BACKEND, JobState.SUBMITTING},
    JobState.STARTING_BACKEND: {JobState.SUBMITTING, JobState.FAILED, JobState.CANCELLED},
    JobState.SUBMITTING: {JobState.RUNNING, JobState.DONE, JobState.FAILED, JobState.CANCELLING},
    JobState.RUNNING: {JobState.RUNNING, JobState.DONE, JobState.FAILED, JobState.CANCELLING},
    JobState.CANCELLING: {JobState.CANCELLED, JobState.DONE, JobState.FAILED},
}
for _t in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
    _ALLOWED[_t] = {JobState.STARTING_BACKEND, JobState.SUBMITTING, JobState.IDLE}


@dataclass
class JobTracker:
    """One job's life as the UI sees it. Transitions not in the table are ignored and reported (a late
    progress message after a cancel must not bring a job back to life). ``status_text`` is what the UI shows."""

    state: JobState = JobState.IDLE
    job_id: str | None = None
    stage: str = ""
    step: int = 0
    total: int = 0
    message: str = ""
    error_code: str | None = None
    history: list[JobState] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return self.state not in _TERMINAL

    @property
    def fraction(self) -> float:
        if self.state == JobState.DONE:
            return 1.0
        return 0.0 if self.total <= 0 else max(0.0, min(1.0, self.step / self.total))

    def _go(self, new: JobState) -> bool:
        if new not in _ALLOWED.get(self.state, set()):
            return False
        self.state = new
        self.history.append(new)
        return True

    def starting_backend(self) -> bool:
        ok = self._go(JobState.STARTING_BACKEND)
        if ok:
            self._reset("Starting the backend…")
        return ok

    def submitting(self) -> bool:
        ok = self._go(JobState.SUBMITTING)
        if ok:
            self._reset("Sending…")
        return ok

    def _reset(self, message: str) -> None:
        self.job_id, self.stage, self.step, self.total, self.error_code = None, "", 0, 0, None
        self.message = message

    def accepted(self, job_id: str) -> bool:
        if self.state == JobState.CANCELLING and self.job_id is None:
            self.job_id = job_id  # cancel pressed before the id came back: the caller sends the cancel now
            return True
        ok = self._go(JobState.RUNNING)
        if ok:
            self.job_id = job_id
            self.message = "Queued…"
        return ok

    def progress(self, stage: str, step: int, total: int) -> bool:
        if self.state not in (JobState.RUNNING, JobState.SUBMITTING):
            return False
        self._go(JobState.RUNNING)
        self.stage, self.step, self.total = stage, int(step), int(total)
        self.message = f"{self.stage_label} {step}/{total}" if total else self.stage_label
        return True

    @property
    def stage_label(self) -> str:
        """The current stage in plain words ("" before the first progress of this job)."""
        return stage_words(self.stage) if self.stage else ""

    @property
    def bar_text(self) -> str:
        """A progress bar's format for this job (Qt's %p% is the percentage): the stage while it runs, the
        outcome after. Reset by every new job, so a finished job's "100%" never shows under the next one."""
        if self.state in (JobState.RUNNING, JobState.CANCELLING) and self.stage:
            return f"{self.stage_label} %p%"
        return {
            JobState.STARTING_BACKEND: "Starting the backend…",
            JobState.SUBMITTING: "Sending…",
            JobState.RUNNING: "Queued…",
            JobState.CANCELLING: "Cancelling…",
            JobState.DONE: "Done",
            JobState.FAILED: "Failed",
            JobState.CANCELLED: "Cancelled",
        }.get(self.state, "")

    @property
    def bar_fraction(self) -> float:
        """What a progress bar fills: 0 unless a job is running or done (a failed job shows an empty bar)."""
        return self.fraction if self.state in (JobState.RUNNING, JobState.CANCELLING, JobState.DONE) else 0.0

    def cancel(self) -> bool:
        ok = self._go(JobState.CANCELLING)
        if not ok and self.state == JobState.STARTING_BACKEND:
            ok = self._go(JobState.CANCELLED)
        if ok:
            self.message = "Cancelling…" if self.state == JobState.CANCELLING else "Cancelled."
        return ok

    def finished(self, message: str = "Done.") -> bool:
        ok = self._go(JobState.DONE)
        if ok:
            self.message = message
        return ok

    def failed(self, code: str, message: str) -> bool:
        if code == ErrorCode.CANCELLED and self.state == JobState.CANCELLING:
            ok = self._go(JobState.CANCELLED)
            if ok:
                self.error_code, self.message = code, "Cancelled."
            return ok
        ok = self._go(JobState.FAILED)
        if ok:
            self.error_code, self.message = str(code), message
        return ok

    @property
    def status_text(self) -> str:
        if self.state == JobState.FAILED and self.error_code:
            return f"Failed ({self.error_code}): {self.message}"
        return self.message
