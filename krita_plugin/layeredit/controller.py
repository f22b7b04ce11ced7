"""The docker's brain, without widgets: connect, submit, follow events, write the result layer.

Qt-free on purpose: the docker wires ``poll`` to a QSocketNotifier on ``client.fd`` and a QTimer, and
``on_change`` to its widgets. Tests drive this class with a fake ``krita`` module and a fake client.
Nothing here blocks: connecting sends ``hello`` and waits for its ``capabilities`` event like any other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol import connection, greeting, wire
from protocol.errors import ErrorCode, ProtocolError
from protocol.hostkit import (
    BackendChoice,
    Form,
    JobState,
    JobTracker,
    Mode,
    backend_status,
    choose_backend,
    forms_from_hello,
    installed_presets,
    load_choice,
    mode_by_label,
    model_hints,
    no_backend_status,
    only_changed,
    op_form,
    packed,
    refused_message,
    result_image,
    result_mask,
    result_names,
    with_project_path,
)

from . import kritaio

Later = Callable[[int, Callable[[], None]], None]  # (ms, fn): QTimer.singleShot in the docker
ClientFactory = Callable[[], Any]  # -> protocol.client.Client (connect(check=False)); raises ProtocolError
LOCAL_HELLO_TIMEOUT_S = 3.0  # a local backend answers hello at once...
LOCAL_BUSY_HELLO_TIMEOUT_S = 60.0  # ...unless it is still starting (importing torch): its process lives
REMOTE_HELLO_TIMEOUT_S = 10.0  # a network round trip plus the CurveZMQ handshake; a refused key never answers
RESTORE_POLL_MS = 10  # how often the active layer is looked at while Krita has yet to activate a new layer
RESTORE_WAIT_S = 10.0  # ...and for how long at most (Krita activates within milliseconds, later under load)


@dataclass
class Pending:
    """A job in flight and everything needed to put its result back where it came from."""

    doc: Any
    source: Any  # Node, or None for the visible image
    pixels: kritaio.SourcePixels
    mode: Mode
    params: dict
    set_selection: bool
    submitted_at: float = field(default_factory=time.monotonic)


@dataclass
class Restore:
    """The source layer to make active again after a result: Krita activates each layer added (an event the
    image thread posts to the GUI thread, some time after ``addChildNode`` returns), so the source is restored
    only once the last layer added is the active one, or when ``deadline`` passes."""

    doc: Any
    source: Any
    added: list  # the result layers, in the order they were added (Krita activates them in that order)
    deadline: float

    def is_added(self, node: Any) -> bool:
        return node is not None and any(kritaio.same_node(node, n) for n in self.added)


@dataclass
class Outcome:
    """What the last finished job produced (the scripted host test reads it)."""

    state: str
    layer: Any = None
    message: str = ""
    code: str | None = None
    meta: dict = field(default_factory=dict)
    sent: dict = field(default_factory=dict)  # region and params of the job (what the user asked for)
    masks: dict = field(default_factory=dict)  # masks returned, by name (erase: region, object)


class Controller:
    def __init__(
        self,
        app: Any,
        client_factory: ClientFactory | None,
        on_change: Callable[[], None] = lambda: None,
        on_preview: Callable[[wire.Buffer], None] = lambda b: None,
        later: Later | None = None,
        config_dir: Path | None = None,
        project_root: Path | None = None,
    ):
        """``client_factory`` None: connect through the saved backend choice (local or an imported remote).
        ``project_root``: where install.py is, for the commands in messages (default: the installer's config).
        ``later(ms, fn)``: run ``fn`` after Qt's loop turns (the docker passes QTimer.singleShot); None: the
        active layer is put back once, at once (a host that activates a new layer synchronously)."""
        self.app = app
        if project_root is None:
            from .backend_proc import load_config

            project_root = load_config().project_root
        self.project_root = project_root
        self.client_factory = client_factory or self._connect_chosen
        self.config_dir = config_dir  # where backend-choice.json and the imported remotes live (tests: tmp)
        self.choice: BackendChoice = load_choice(config_dir)
        self.on_change = on_change
        self.on_preview = on_preview
        self.later = later
        self.restoring: Restore | None = None  # a source to make active again once Krita has activated ours
        self.restore_wait_s = RESTORE_WAIT_S
        self.client: Any = None
        self.hello: dict | None = None
        self.forms: dict[str, Form] = {}
        self.connection_text = "Not connected."
        self.job = JobTracker()
        self.pending: Pending | None = None
        self.last: Outcome | None = None
        self.last_imagic: dict | None = None  # params of the last Imagic run (eta-only re-render check)
        self.last_imagic_input: tuple | None = None  # (doc, node, source kind, set_selection) it read
        self._hello_id: str | None = None
        self._hello_tries: greeting.Tries | None = None  # resends on a fresh connection while unanswered
        self.on_new_socket: Callable[[], None] = lambda: None  # the docker watches the new ``client.fd``
        self._resume: str | None = None  # a running job to fetch once the new socket's hello is answered
        self.connection_tip = ""  # the technical side of connection_text (address, version, raw error)
        self.last_imagic_seed: int | None = None  # the seed the last Imagic run used (-1 picked one)

    # -- connection -------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.client is not None and self.hello is not None

    def connect(self) -> bool:
        """Open the socket and send hello; ``capabilities`` arrives through ``poll``. False: no backend.
        A job running on the backend keeps running: once the new socket's hello is answered it is fetched
        (re-attached), so its progress and result come to the new socket. The same owner token (local) or
        key (remote) makes it ours there."""
        resume = self.job.job_id if self.job.busy and self.pending is not None else None
        if self.job.busy and resume is None:  # not sent yet, or no id: nothing to fetch on the new socket
            self.job.failed(
                ErrorCode.CANCELLED, "Reconnected to the backend before the job was sent; run it again."
            )
            self.pending = None
        self.disconnect()
        try:
            self.client = self.client_factory()
            # a remote server that refused this key leaves no connection to queue on: send raises NO_BACKEND
            msg = self.client.send(wire.Message(wire.HELLO, content={"client": "layeredit-krita"}))
        except ProtocolError as exc:
            self.disconnect()
            self.connection_text, self.connection_tip = no_backend_status(
                self.user_text(exc.message), self.remote
            )
            if resume is not None:
                self._fail_pending(exc)
            self.on_change()
            return False
        self._hello_id = msg.id
        # remote: resend a hello only once it was lost, when the client can tell (``Client.first_lost``)
        watches = bool(self.remote and getattr(self.client, "watches_first", False))
        self._hello_tries = greeting.Tries(self.hello_timeout_s, time.monotonic(), remote=watches)
        self._resume = resume
        if resume is not None:
            self.job.message = "Reconnecting; the job keeps running…"
        self.connection_text, self.connection_tip = "Backend: connecting…", self.client.info.endpoint
        self.on_change()
        return True

    @property
    def remote(self) -> bool:
        return not self.choice.local

    def _connect_chosen(self) -> Any:
        from protocol.client import Client  # imported late: tests of the widget-free logic need no zmq

        return Client.connect(self.choice.connection_file, check=False)

    def choose(self, text: str) -> bool:
        """Use another backend ("local", a connection string, a connection file's path, or "ADDRESS SERVER_KEY
        SIGNING_KEY"), saved for both hosts, then reconnect. False (reason in ``connection_text``) keeps the old
        choice and connection."""
        try:
            self.choice = choose_backend(text, self.config_dir)
        except ProtocolError as exc:
            self.connection_text = exc.message
            self.on_change()
            return False
        self.connect()
        if self.choice.pending_key:
            self.connection_text = (
                f"{self.connection_text} New key for this computer; ask the admin to run: "
                f"python -m backend keys allow {self.choice.pending_key} NAME"
            )
        return True

    def disconnect(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001 - closing a dead socket must never raise into Qt
                pass
        self.client, self.hello, self._hello_id, self._hello_tries = None, None, None, None

    @property
    def hello_timeout_s(self) -> float:
        """How long a hello may go unanswered before the backend counts as not running. A local backend whose
        process is alive is starting or busy, not gone: it gets longer (a dead pid still fails after 3 s)."""
        if self.remote:
            return REMOTE_HELLO_TIMEOUT_S
        info = getattr(self.client, "info", None)
        pid = getattr(info, "pid", None)
        if isinstance(pid, int) and pid > 0 and connection.pid_alive(pid):
            return LOCAL_BUSY_HELLO_TIMEOUT_S
        return LOCAL_HELLO_TIMEOUT_S

    def form(self, mode: Mode) -> Form | None:
        return self.forms.get(mode.op)

    def form_defaults(self, mode: Mode) -> dict:
        """The params of ``mode``'s op as the schema's defaults (for actions that run it without its widgets)."""
        form = self.form(mode)
        return {} if form is None else {f.name: f.default for f in form.fields}

    def user_text(self, message: str) -> str:
        """A message as the user reads it: ``python3 install.py`` names the project's install.py by its absolute
        path, unless the backend is remote (its install commands are for the other machine)."""
        return with_project_path(message, None if self.remote else self.project_root)

    def hints(self, mode: Mode) -> dict[str, str]:
        """param -> what better quality needs and the command that installs it (e.g. next to Erase's Fill when
        no learned or diffusion filler is installed), from the presets the backend reports."""
        root = None if self.remote else self.project_root
        return model_hints(self.form(mode), installed_presets(self.hello), root)

    # -- running ----------------------------------------------------------------------------------
    def run(
        self,
        doc: Any,
        node: Any,
        mode_label: str,
        params: dict,
        *,
        source: str = kritaio.SOURCE_LAYER,
        set_selection: bool = False,
    ) -> bool:
        """Read the document and submit. Returns False (with the reason in ``job.message``) when it cannot."""
        if self.job.busy:
            return False
        if source == kritaio.SOURCE_LAYER:
            node = self._source_for(doc, node)
        mode = mode_by_label(mode_label)
        self.job.submitting()
        try:
            if not self.connected:
                raise ProtocolError(ErrorCode.NO_BACKEND, "Not connected to the backend yet: press Connect.")
            mode = mode.with_schema(op_form(self.forms, mode.op).needs_selection)
            pixels = kritaio.read_source(doc, node, mode, source, params)
            image, selection = pixels.buffers()
            job_id = self.client.submit(mode.op, params, image=image, selection=selection)
        except ProtocolError as exc:
            self.job.failed(exc.code, self.user_text(exc.message))
            self.on_change()
            return False
        self.pending = Pending(
            doc, node if source == kritaio.SOURCE_LAYER else None, pixels, mode, dict(params), set_selection
        )
        self.job.accepted(job_id)
        self.job.message = "Sent; waiting for the backend…"
        if mode.op == "imagic":
            self.last_imagic = dict(params)
            self.last_imagic_input = (doc, node, source, set_selection)
        self.poll()  # ZMQ_FD is edge-triggered: drain once right after sending
        self.on_change()
        return True

    def _source_for(self, doc: Any, node: Any) -> Any:
        """The layer a Run reads: ``node`` (the active one), unless Krita made one of the last result's layers
        active on its own and the source has not been restored yet (a Run pressed within that moment)."""
        r = self.restoring
        if r is None or not r.is_added(node) or not kritaio.document_alive(self.app, r.doc) or r.doc != doc:
            return node
        if not kritaio.node_alive(doc, r.source):
            return node
        if kritaio.same_node(node, r.added[-1]):
            self.restoring = None  # Krita's activations are all in: nothing more to wait for
        kritaio.reactivate(self.app, doc, r.source)
        return r.source

    def _restore_source(self, r: Restore) -> None:
        """Make the source active again once Krita has activated the last layer added (looked at every
        RESTORE_POLL_MS through ``later``), or at the deadline if one of ours is active then. A layer the user
        picked meanwhile (not one of ours) is left active, unless Krita's own activation of our layer lands after
        the user's pick (a window of milliseconds): then the source is restored."""
        if self.restoring is not r:
            return  # a newer result took over
        if not kritaio.document_alive(self.app, r.doc) or not kritaio.node_alive(r.doc, r.source):
            self.restoring = None
            return
        active = kritaio.active_node(r.doc)
        settled = active is not None and kritaio.same_node(active, r.added[-1])
        if settled or self.later is None or time.monotonic() >= r.deadline:
            if r.is_added(active):
                kritaio.reactivate(self.app, r.doc, r.source)
            self.restoring = None
            return
        self.later(RESTORE_POLL_MS, lambda: self._restore_later(r))

    def _restore_later(self, r: Restore) -> None:
        """``_restore_source`` from a Qt timer: never raises into Qt (a wrapper Krita deleted meanwhile)."""
        try:
            self._restore_source(r)
        except Exception:  # noqa: BLE001 - the active layer is a convenience: stop looking, keep Krita alive
            self.restoring = None

    def eta_only_change(self, params: dict) -> bool:
        """True when an Imagic re-run differs from the last one only in eta (the backend re-renders from cache)."""
        changed = only_changed(self.last_imagic, params)
        return (
            bool(self.last_imagic) and changed <= {"eta", "etas", "preview"} and bool(changed - {"preview"})
        )

    def rerun_eta(self, params: dict) -> bool:
        """Re-submit the last Imagic job with a new eta, on the same document and layer it read (whatever is
        active now): the backend finds its tuned state in the cache and only samples again."""
        if not self.eta_only_change(params) or self.last_imagic_input is None:
            return False
        doc, node, source, set_selection = self.last_imagic_input
        if not kritaio.document_alive(self.app, doc):
            return False
        sent = dict(params)
        if "seed" in sent and sent["seed"] < 0 and self.last_imagic_seed is not None:
            sent["seed"] = self.last_imagic_seed  # same noise: only eta differs from the layer beside it
        ok = self.run(doc, node, "Imagic", sent, source=source, set_selection=set_selection)
        if ok:
            self.last_imagic = dict(params)  # what the form said, so the next eta move compares alike
        return ok

    def preview_eta(self, params: dict) -> bool:
        """While the eta slider is dragged: a quick draft (``preview``: few sampling steps from the cached
        tuning) shown in the docker, not written as a layer; the full render follows on release. False when the
        backend has no preview, or the job is not an eta-only change of the last Imagic run."""
        form = self.forms.get("imagic")
        if form is None or not form.has("preview") or self.last_imagic is None:
            return False
        before = self.last_imagic
        ok = self.rerun_eta({**params, "preview": True})
        self.last_imagic = before  # a draft does not count: releasing at this eta still renders it fully
        return ok

    def cancel(self) -> None:
        if not self.job.busy:
            return
        job_id = self.job.job_id
        if self.job.cancel() and job_id and self.client is not None:
            try:
                self.client.cancel(job_id)
            except Exception as exc:  # noqa: BLE001 - a dead socket: report, never raise into Qt
                self.job.failed(ErrorCode.BACKEND_GONE, str(exc))
                self.pending = None
            self.poll()
        self.on_change()

    # -- events -----------------------------------------------------------------------------------
    def poll(self) -> None:
        """Drain the client's events (QSocketNotifier + QTimer call this). Never raises into Qt."""
        if self.client is None:
            return
        try:
            events = self.client.pump()
        except Exception as exc:  # noqa: BLE001
            events = []
            self._lost(ProtocolError(ErrorCode.BACKEND_GONE, f"Lost the backend: {exc}"))
        for ev in events:
            self._handle(ev)
        if self._hello_id and self.hello is None and self._hello_tries is not None:
            self._hello_unanswered()
        if events:
            self.on_change()

    def _hello_unanswered(self) -> None:
        """The hello is not answered yet: resend it on a fresh connection when ``greeting.Tries`` says so (the
        backend's guard may have cut the first one unread), or give up once the timeout has passed, saying what
        is true (``greeting.unanswered``: stopped, nothing listening, or running but busy or refusing)."""
        tries, now = self._hello_tries, time.monotonic()
        tries.timeout_s = self.hello_timeout_s  # shorter once the local backend's process is gone
        if tries.expired(now):
            info = getattr(self.client, "info", None)
            if self.remote:  # a refused key gets no answer at all: say which key to allow
                self._lost(ProtocolError(ErrorCode.NO_BACKEND, refused_message(info)))
            elif info is None:
                self._lost(
                    ProtocolError(
                        ErrorCode.NO_BACKEND, "The backend does not answer; start it and reconnect."
                    )
                )
            else:
                self._lost(greeting.unanswered(info, tries.count, now - tries.started))
            return
        if not tries.due(now, lost=bool(tries.remote and self.client.first_lost())):
            return
        tries.resent(now)
        old, self.client = self.client, None
        try:
            old.close(linger_ms=0)
        except Exception:  # noqa: BLE001 - closing a dead socket must never raise into Qt
            pass
        try:
            self.client = self.client_factory()  # reads the connection file again (a restarted backend)
            msg = self.client.send(wire.Message(wire.HELLO, content={"client": "layeredit-krita"}))
        except ProtocolError as exc:
            self._lost(exc)
            return
        self._hello_id = msg.id
        self.on_new_socket()

    def _handle(self, ev: Any) -> None:
        if ev.type == wire.CAPABILITIES and (ev.message is None or ev.message.parent == self._hello_id):
            self.hello = ev.content
            self.client.accept_capabilities(ev.content)  # limits, and shared memory when offered
            self.forms = forms_from_hello(ev.content)
            remote_name = self.choice.label[len("Remote: ") :] if self.remote else None
            self.connection_text, self.connection_tip = backend_status(
                ev.content, self.client.info.endpoint, remote_name
            )
            if self._resume is not None:
                job_id, self._resume = self._resume, None
                try:
                    self.client.attach(job_id)
                except ProtocolError as exc:
                    self._fail_pending(exc)
                    return
                self.job.message = "Reconnected; following the running job…"
            return
        if ev.type == wire.ERROR and ev.job is None:
            if self.hello is None and ev.message is not None and ev.message.parent == self._hello_id:
                self._lost(ev.error)
            return
        if self.pending is None or ev.job != self.job.job_id:
            return  # a late message from an old job
        if ev.type == wire.ACCEPTED:
            self.job.message = "Queued…"
        elif ev.type == wire.PROGRESS:
            p = ev.progress
            self.job.progress(p.stage, p.step, p.total)
            if p.preview is not None:
                self.on_preview(p.preview)
        elif ev.type == wire.RESULT:
            self._apply(ev.result)
        elif ev.type == wire.ERROR:
            err = ev.error
            self.job.failed(err.code, self.user_text(err.message))
            self.last = Outcome(self.job.state.value, message=self.job.message, code=err.code.value)
            self.pending = None
            if err.code == ErrorCode.BACKEND_GONE:
                self._lost(err)

    def _fail_pending(self, err: ProtocolError) -> None:
        """The job in flight cannot be followed any more (nothing was written to the document)."""
        if self.job.busy:
            self.job.failed(err.code, self.user_text(err.message))
            self.last = Outcome(self.job.state.value, message=self.job.message, code=err.code.value)
        self.pending = None

    def _lost(self, err: ProtocolError) -> None:
        """The backend went away: fail the job (the document is untouched: nothing was written yet)."""
        if self.job.busy:
            self.job.failed(err.code, self.user_text(err.message))
            self.last = Outcome(self.job.state.value, message=self.job.message, code=err.code.value)
        self.pending = None
        self._resume = None
        said = self.user_text(err.message)
        if self.remote or err.code == ErrorCode.BACKEND_GONE:  # says what happened and what to do
            self.connection_text = self.connection_tip = said
        elif err.code == ErrorCode.TIMEOUT:  # running but silent: starting another one would not help
            self.connection_text = (
                "Backend: running on this computer but not answering. Press Connect to try again."
            )
            self.connection_tip = said
        else:
            self.connection_text, self.connection_tip = no_backend_status(said, remote=False)
        self.disconnect()
        self.on_change()

    def _apply(self, result: Any) -> None:
        pend, self.pending = self.pending, None
        region = pend.pixels.plan.region
        if not kritaio.document_alive(self.app, pend.doc):
            self.job.failed(
                ErrorCode.MISSING_INPUT, "The document was closed while the job ran; result dropped."
            )
            self.last = Outcome(self.job.state.value, message=self.job.message, code="document_closed")
            return
        if not pend.mode.makes_layer:
            self._apply_selection(result, pend)
            return
        if pend.params.get("preview"):  # an eta-slider draft: shown in the docker, never a layer
            if result.image is not None:
                self.on_preview(result.image)
            self.job.finished("Preview; release the slider for the full render.")
            self.last = Outcome(self.job.state.value, message=self.job.message, meta=dict(result.meta))
            return
        layout = pend.pixels.layout
        try:  # every buffer is checked before the document is touched
            images = [
                result_image(img, region, layout.sample, layout.order)
                for img in (result.image, *result.candidates)
            ]
            selected = result.selection_mask  # the snapped object, not the wider region erase repainted
            mask = result_mask(selected, region) if pend.set_selection and selected is not None else None
        except ProtocolError as exc:
            self._fail_pending(exc)
            return
        names = result_names(pend.mode, pend.params, result.meta, len(images), kritaio.layer_names(pend.doc))
        layers = [
            kritaio.add_result_layer(pend.doc, pend.source, name, data, region)
            for name, data in zip(names, images, strict=True)
        ]  # each goes right above the source, so the first (the primary eta) ends on top
        layer = layers[0]
        if pend.source is not None:
            self.restoring = Restore(pend.doc, pend.source, layers, time.monotonic() + self.restore_wait_s)
            self._restore_source(self.restoring)
        if mask is not None:
            kritaio.set_selection(pend.doc, mask, region)
        if pend.mode.op == "imagic" and isinstance(result.meta.get("seed"), int):
            self.last_imagic_seed = int(result.meta["seed"])
        took = time.monotonic() - pend.submitted_at
        self.job.finished(f"Done in {took:.1f} s: new layer '{layer.name()}'.")
        sent = {
            "region": region.as_tuple(),
            "source": pend.source.name() if pend.source is not None else None,
            "params": pend.params,
        }
        self.last = Outcome(
            self.job.state.value,
            layer=layer,
            message=self.job.message,
            meta=dict(result.meta),
            sent=sent,
            masks=_masks_of(result),
        )

    def _apply_selection(self, result: Any, pend: Pending) -> None:
        """Select object: the snapped mask replaces the selection over the region sent; no layer, no pixels."""
        region = pend.pixels.plan.region
        try:
            mask = result_mask(result.mask, region)
        except ProtocolError as exc:
            self._fail_pending(exc)
            return
        kritaio.set_selection(pend.doc, mask, region)
        took = time.monotonic() - pend.submitted_at
        self.job.finished(f"Done in {took:.1f} s: the object is selected.")
        sent = {
            "region": region.as_tuple(),
            "source": pend.source.name() if pend.source is not None else None,
        }
        self.last = Outcome(
            self.job.state.value,
            message=self.job.message,
            meta=dict(result.meta),
            sent={**sent, "params": pend.params},
            masks=_masks_of(result),
        )

    @property
    def state(self) -> JobState:
        return self.job.state


def _masks_of(result: Any) -> dict[str, bytes]:
    """The masks a result carries, by name (erase: region, object), packed: the scripted host test reads them."""
    return {name: packed(buf) for name, buf in result.named_masks().items()}
