"""The LayerEdit docker: widgets only. The logic is in ``controller.Controller`` and ``protocol.hostkit``.

The socket is watched by a QSocketNotifier on the client's ZMQ_FD plus a 250 ms QTimer (the FD is
edge-triggered, and the timer also drives the client's liveness check and the backend start-up), so Krita's UI
never waits on the backend.
"""

from __future__ import annotations

import traceback
from typing import Any

from krita import DockWidget, Krita
from PyQt5.QtCore import QSocketNotifier, Qt, QTimer
from PyQt5.QtGui import QImage, QPixmap
from PyQt5.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from protocol.errors import ProtocolError
from protocol.hostkit import MODES, Field, Form, mode_by_label
from protocol.launcher import Launcher

from . import kritaio
from .backend_proc import new_launcher
from .controller import Controller

INSTANCES: list[LayerEditDocker] = []  # the scripted host test finds the docker here
_QIMAGE_FORMATS = {
    "RGBA": QImage.Format_RGBA8888,
    "BGRA": QImage.Format_ARGB32,  # little-endian ARGB32 is B,G,R,A in memory
    "RGB": QImage.Format_RGB888,
    "gray": QImage.Format_Grayscale8,
}
ETA_SCALE = 100  # slider ticks per 1.0 of eta
ETA_TIP = "Edit strength: 0 = the input, 1 = the text; 0.6-0.8 usually works."
PREVIEW_H = 128
FORM_MIN_H = 24  # the scrolling form may shrink to about one row
STATUS_LINES = 3  # the status line grows up to this many lines, then scrolls (full text in its tooltip)
IDLE_POLL_MS, BUSY_POLL_MS = 250, 100  # busy: the client's 2 s liveness verdict is seen within 0.1 s


def _decimals(f: Field) -> int:
    """Learning rates and other tiny values need more than 3 decimals or a spin box rounds them to 0."""
    small = [abs(v) for v in (f.default, f.min) if isinstance(v, int | float) and v]
    return 7 if f.name.endswith("_lr") or any(v < 0.01 for v in small) else 3


class LayerEditDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("LayerEdit")
        self.controller = Controller(
            Krita.instance(),
            None,  # connect through the saved backend choice (local, or an imported remote connection)
            self._refresh,
            self._show_preview,
            later=lambda ms, fn: QTimer.singleShot(ms, fn),
        )
        self.controller.on_new_socket = lambda: self._watch_socket(poll=False)  # a hello resent afresh
        self.launcher: Launcher | None = None
        self.notifier: QSocketNotifier | None = None
        self.param_widgets: dict[str, tuple[Field, QWidget]] = {}
        self._built_for: Any = None  # the hello the widgets were built from
        self._build()
        self.timer = QTimer(self)
        self.timer.setInterval(IDLE_POLL_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()
        INSTANCES.append(self)
        QTimer.singleShot(0, lambda: self.connect_backend(ask=False))  # silent at start: no dialog

    # -- layout -----------------------------------------------------------------------------------
    def _build(self) -> None:
        """The connection line and the form in a scroll area; Run/Cancel, the progress bar and the status line
        pinned below it: in a short docker they stay visible however long the form gets."""
        root = QWidget(self)
        outer = QVBoxLayout(root)
        outer.setContentsMargins(4, 2, 4, 2)
        outer.setSpacing(3)
        row = QHBoxLayout()
        self.conn_label = QLabel("Backend: not connected.")
        self.conn_label.setWordWrap(True)
        self.connect_button = QPushButton("Connect")
        self.connect_button.clicked.connect(lambda: self.connect_backend(ask=True))
        self.backend_button = QToolButton()
        self.backend_button.setText("Backend…")
        self.backend_button.setPopupMode(QToolButton.InstantPopup)
        menu = QMenu(self.backend_button)
        menu.addAction("Local (this computer)", lambda: self.choose_backend("local"))
        menu.addAction("Import connection file…", self._import_file)
        menu.addAction("Paste connection string…", self._paste_string)
        self.backend_button.setMenu(menu)
        row.addWidget(self.conn_label, 1)
        row.addWidget(self.backend_button)
        row.addWidget(self.connect_button)

        self.form_widget = QWidget()
        lay = QVBoxLayout(self.form_widget)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)  # scrolls with the form: in a short docker the room goes to Run and the status
        top = QFormLayout()
        self.mode_box = QComboBox()
        self.mode_box.addItems([m.label for m in MODES])
        self.mode_box.currentIndexChanged.connect(self._rebuild_params)
        top.addRow("Mode", self.mode_box)
        self.source_box = QComboBox()
        self.source_box.addItem("Active layer", kritaio.SOURCE_LAYER)
        self.source_box.addItem("Visible image", kritaio.SOURCE_VISIBLE)
        top.addRow("Source", self.source_box)
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("what should be there instead")
        self.negative = QLineEdit()
        self.negative.setPlaceholderText("what to avoid")
        self.prompt_label, self.negative_label = QLabel("Prompt"), QLabel("Negative")
        top.addRow(self.prompt_label, self.prompt)
        top.addRow(self.negative_label, self.negative)
        lay.addLayout(top)

        self.eta_row = QWidget()
        eta_lay = QHBoxLayout(self.eta_row)
        eta_lay.setContentsMargins(0, 0, 0, 0)
        self.eta_slider = QSlider(Qt.Horizontal)
        self.eta_slider.setRange(0, 150)
        self.eta_slider.setValue(70)
        self.eta_label = QLabel("0.70")
        self.eta_slider.valueChanged.connect(lambda v: self.eta_label.setText(f"{v / ETA_SCALE:.2f}"))
        self.eta_slider.sliderReleased.connect(self._eta_released)
        self.eta_slider.sliderMoved.connect(self._eta_dragged)
        self._render_when_idle = False  # released while a draft ran: render fully once it is done
        self.eta_title = QLabel("Edit strength (eta)")
        eta_lay.addWidget(self.eta_title)
        eta_lay.addWidget(self.eta_slider, 1)
        eta_lay.addWidget(self.eta_label)
        self._set_eta_tip(ETA_TIP)
        lay.addWidget(self.eta_row)

        self.basic_box = QWidget()
        self.basic_form = QFormLayout(self.basic_box)
        self.basic_form.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.basic_box)
        self.advanced_toggle = QPushButton("Advanced ▸")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.setFlat(True)
        self.advanced_toggle.toggled.connect(self._toggle_advanced)
        lay.addWidget(self.advanced_toggle)
        self.advanced_box = QGroupBox()
        self.advanced_form = QFormLayout(self.advanced_box)
        self.advanced_box.setVisible(False)
        lay.addWidget(self.advanced_box)

        self.select_after = QCheckBox("Select the snapped object afterwards")
        self.select_after.setToolTip(
            "After the job, the selection becomes the object as the backend found it."
        )
        lay.addWidget(self.select_after)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setVisible(False)
        lay.addWidget(self.log_view)
        lay.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QScrollArea.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.form_widget)
        self.scroll.setMinimumHeight(FORM_MIN_H)  # the form gives way first; the controls below never do
        outer.addWidget(self.scroll, 1)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run_clicked)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.controller.cancel)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        outer.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        outer.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)  # the install command can be copied
        self.status.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        self.status_box = QScrollArea()  # up to STATUS_LINES lines; a longer message scrolls, never clips
        self.status_box.setWidgetResizable(True)
        self.status_box.setFrameShape(QScrollArea.NoFrame)
        self.status_box.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.status_box.setWidget(self.status)
        self.status_box.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Fixed)
        outer.addWidget(self.status_box)  # right under the bar: an error is read where the bar stopped
        self.preview = QLabel()
        self.preview.setFixedHeight(PREVIEW_H)
        self.preview.setAlignment(Qt.AlignCenter)
        self.preview.setVisible(False)  # shown only while there is a preview to show
        outer.addWidget(self.preview)
        self.setWidget(root)
        self._rebuild_params()

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._fit_status()

    def _fit_status(self) -> None:
        """A wrapped QLabel in a dock gets one line's height when space is short: give the status the height
        its text needs at the current width, up to STATUS_LINES lines (a longer one, e.g. model_missing with
        its install command, scrolls there instead of making Krita's window taller)."""
        width = max(1, self.status_box.viewport().width() or self.status_box.width())
        need = self.status.heightForWidth(width) if self.status.text() else 0
        cap = STATUS_LINES * self.status.fontMetrics().lineSpacing()
        self.status_box.setFixedHeight(max(self.status.fontMetrics().lineSpacing(), min(need, cap)) + 2)

    def _set_eta_tip(self, tip: str) -> None:
        for w in (self.eta_title, self.eta_slider, self.eta_label):
            w.setToolTip(tip)

    def _clear_preview(self) -> None:
        self.preview.clear()
        self.preview.setVisible(False)

    def _toggle_advanced(self, on: bool) -> None:
        self.advanced_box.setVisible(on)
        self.advanced_toggle.setText("Advanced ▾" if on else "Advanced ▸")

    @property
    def mode(self):
        return mode_by_label(self.mode_box.currentText())

    def _rebuild_params(self, *_: Any) -> None:
        """Build the parameter widgets from the schema the backend advertised for the chosen op."""
        for form_layout in (self.basic_form, self.advanced_form):
            while form_layout.rowCount():
                form_layout.removeRow(0)
        self.param_widgets.clear()
        mode = self.mode
        form = self.controller.form(mode)
        has_prompt = mode.has_prompt and (form is None or form.has("prompt"))
        has_negative = mode.has_negative and (form is None or form.has("negative_prompt"))
        for widget in (self.prompt, self.prompt_label):
            widget.setVisible(has_prompt)
        for widget in (self.negative, self.negative_label):
            widget.setVisible(has_negative)
        has_eta = form is not None and form.has("eta")
        self.eta_row.setVisible(has_eta)
        if has_eta:
            f = form.field("eta")
            self._set_eta_tip(f.help.split(". Several")[0] + "." if f.help else ETA_TIP)
            lo, hi = f.min if f.min is not None else 0.0, f.max if f.max is not None else 1.5
            self.eta_slider.setRange(int(lo * ETA_SCALE), int(hi * ETA_SCALE))
            eta = form.values["eta"]
            eta = eta[0] if isinstance(eta, list) and eta else eta
            self.eta_slider.setValue(int(round(float(eta) * ETA_SCALE)))
        self.select_after.setVisible(mode.snaps)  # only ops that return the snapped object offer it
        if form is None:
            self.advanced_toggle.setVisible(False)
            return
        hints = self.controller.hints(mode)  # e.g. under Fill: what better quality needs, how to install it
        for f in form.basic:
            if f.name != "eta":
                self._add_field(self.basic_form, form, f, hints.get(f.name, ""))
        for f in form.advanced:
            if f.name != "eta":
                self._add_field(self.advanced_form, form, f, hints.get(f.name, ""))
        self.advanced_toggle.setVisible(bool(form.advanced))

    def _add_field(self, layout: QFormLayout, form: Form, f: Field, hint: str = "") -> None:
        value = form.values.get(f.name, f.default)
        if f.type == "int":
            w: QWidget = QSpinBox()
            w.setRange(
                int(f.min) if f.min is not None else -(2**31), int(f.max) if f.max is not None else 2**31 - 1
            )
            w.setValue(int(value))
            if f.unit:
                w.setSuffix(f" {f.unit}")
        elif f.type == "float":
            w = QDoubleSpinBox()
            w.setDecimals(_decimals(f))
            w.setRange(f.min if f.min is not None else -1e9, f.max if f.max is not None else 1e9)
            w.setSingleStep(0.05 if (f.max or 0) <= 2 else 1.0)
            w.setValue(float(value))
            if f.unit:
                w.setSuffix(f" {f.unit}")
        elif f.type == "bool":
            w = QCheckBox()
            w.setChecked(bool(value))
        elif f.type == "enum":
            w = QComboBox()
            w.addItems(list(f.choices))
            w.setCurrentText(str(value))
        else:
            w = QLineEdit(f.to_text(value))
        w.setToolTip(f.help)
        layout.addRow(f.label, w)
        self.param_widgets[f.name] = (f, w)
        if hint:
            note = QLabel(hint)
            note.setWordWrap(True)
            note.setTextInteractionFlags(Qt.TextSelectableByMouse)  # the command can be copied
            note.setObjectName(f"hint_{f.name}")
            layout.addRow("", note)

    def collect_params(self) -> dict:
        """Widget values -> validated params (bad values raise ProtocolError(bad_param) naming the field)."""
        form = self.controller.form(self.mode)
        if form is None:
            return {}
        for name, (_field, w) in self.param_widgets.items():
            if isinstance(w, QSpinBox | QDoubleSpinBox):
                form.set(name, w.value())
            elif isinstance(w, QCheckBox):
                form.set(name, w.isChecked())
            elif isinstance(w, QComboBox):
                form.set(name, w.currentText())
            else:
                form.set(name, w.text())
        overrides: dict[str, Any] = {}
        if form.has("prompt"):
            overrides["prompt"] = self.prompt.text()
        if form.has("negative_prompt"):
            overrides["negative_prompt"] = self.negative.text()
        if form.has("eta"):
            overrides["eta"] = self.eta_slider.value() / ETA_SCALE  # float_list fields take one value too
        return form.params(**overrides)

    # -- actions ----------------------------------------------------------------------------------
    def connect_backend(self, ask: bool = True) -> None:
        if self.controller.connect():
            self._watch_socket()
            return
        # a remote backend is someone else's machine: never offer to start a local one in its place
        if ask and not self.controller.remote and self.launcher is None and self._ask_to_start():
            self.start_backend()

    def choose_backend(self, text: str) -> None:
        if self.controller.choose(text) and self.controller.client is not None:
            self._watch_socket()
        self.backend_button.setToolTip(self.controller.choice.label)

    def _import_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Import a backend connection", "", "Connection files (*.json *.txt);;All files (*)"
        )
        if path:
            self.choose_backend(path)

    def _paste_string(self) -> None:
        text, ok = QInputDialog.getMultiLineText(
            self,
            "Remote backend",
            "Paste the connection string (layeredit1:…) from the backend's admin,\n"
            "or ADDRESS:PORT SERVER_KEY SIGNING_KEY (a new key for this computer is then made):",
        )
        if ok and text.strip():
            self.choose_backend(text)

    def _ask_to_start(self) -> bool:
        if not self.isVisible():
            return False  # never pop dialogs for a hidden docker (e.g. at Krita start)
        answer = QMessageBox.question(
            self, "LayerEdit", f"{self.controller.connection_text}\n\nStart the backend now?"
        )
        return answer == QMessageBox.Yes

    def start_backend(self) -> None:
        self.launcher = new_launcher()
        try:
            self.launcher.start()
        except Exception as exc:  # noqa: BLE001
            self.launcher = None
            self.status.setText(str(exc))
            return
        self.conn_label.setText("Starting the backend…")

    def run_clicked(self) -> bool:
        app = Krita.instance()
        doc = app.activeDocument()
        node = doc.activeNode() if doc is not None else None
        try:
            params = self.collect_params()
        except ProtocolError as exc:
            self.status.setText(exc.message)
            return False
        self._clear_preview()
        ok = self.controller.run(
            doc,
            node,
            self.mode.label,
            params,
            source=self.source_box.currentData(),
            set_selection=self.select_after.isChecked(),
        )
        self._refresh()
        return ok

    def select_object(self) -> bool:
        """The Select Object action: snap the current selection to the object whatever mode the docker shows
        (with the mode's widgets when Select object is the mode, else the snap op's defaults). The docker may be
        hidden, so the outcome also shows as a message on the canvas."""
        select = mode_by_label("Select object")
        app = Krita.instance()
        doc = app.activeDocument()
        node = doc.activeNode() if doc is not None else None
        try:
            params = self.collect_params() if self.mode == select else self.controller.form_defaults(select)
        except ProtocolError as exc:
            self.status.setText(exc.message)
            return False
        ok = self.controller.run(doc, node, select.label, params, source=self.source_box.currentData())
        self._refresh()
        if not ok:
            self._canvas_message(self.controller.job.status_text)
        return ok

    def _canvas_message(self, text: str) -> None:
        window = Krita.instance().activeWindow()
        view = window.activeView() if window is not None else None
        if view is not None and text:
            from PyQt5.QtGui import QIcon

            view.showFloatingMessage(text, QIcon(), 4000, 1)

    def _eta_dragged(self, *_: Any) -> None:
        """Imagic: while dragging, a few-step draft in the preview box (skipped while one is in flight)."""
        if self.mode.op != "imagic" or self.controller.job.busy:
            return
        try:
            params = self.collect_params()
        except ProtocolError:
            return
        if self.controller.eta_only_change(params) and self.controller.preview_eta(params):
            self._refresh()

    def _eta_released(self) -> None:
        """Imagic: moving eta re-renders from the backend's cached tuning (only eta changed)."""
        if self.mode.op != "imagic":
            return
        if self.controller.job.busy:  # a draft is still running: render when it is done
            self._render_when_idle = bool(
                self.controller.pending and self.controller.pending.params.get("preview")
            )
            return
        self._render_when_idle = False
        try:
            params = self.collect_params()
        except ProtocolError:
            return
        if self.controller.eta_only_change(params):
            self._clear_preview()
            self.controller.rerun_eta(params)
            self._refresh()

    # -- polling ----------------------------------------------------------------------------------
    def _watch_socket(self, poll: bool = True) -> None:
        if self.notifier is not None:
            self.notifier.setEnabled(False)
            self.notifier.deleteLater()
            self.notifier = None
        client = self.controller.client
        if client is None:
            return
        self.notifier = QSocketNotifier(client.fd, QSocketNotifier.Read, self)
        self.notifier.activated.connect(self._on_socket)
        if poll:
            self.controller.poll()

    def _on_socket(self, *_: Any) -> None:
        if self.notifier is not None:
            self.notifier.setEnabled(False)
        try:
            self.controller.poll()
        finally:
            if self.notifier is not None:
                self.notifier.setEnabled(True)

    def _tick(self) -> None:
        try:
            if self.launcher is not None:
                state = self.launcher.poll()
                if state == "ready":
                    self.launcher = None
                    self.connect_backend(ask=False)
                elif state == "failed":
                    self.log_view.setPlainText(self.launcher.failure_text())
                    self.log_view.setVisible(True)
                    self.conn_label.setText("The backend failed to start (log below).")
                    self.launcher = None
            had_client = self.controller.client is not None
            self.controller.poll()
            if had_client and self.controller.client is None and self.notifier is not None:
                self.notifier.setEnabled(False)
                self.notifier = None
        except Exception:  # noqa: BLE001 - a Qt slot must never raise
            self.status.setText(traceback.format_exc(limit=3))

    # -- feedback ---------------------------------------------------------------------------------
    def _refresh(self) -> None:
        c = self.controller
        if self.launcher is None:
            self.conn_label.setText(c.connection_text)
            self.conn_label.setToolTip(f"{c.choice.label}: {c.connection_tip}" if c.connection_tip else "")
        self.connect_button.setText("Reconnect" if c.connected else "Connect")
        job = c.job
        self.timer.setInterval(BUSY_POLL_MS if job.busy else IDLE_POLL_MS)
        self.run_button.setEnabled(not job.busy)
        self.cancel_button.setEnabled(job.busy)
        self.progress.setValue(int(job.bar_fraction * 1000))  # this job's, from 0: never the last one's 100%
        self.progress.setFormat(job.bar_text)
        self.status.setText(job.status_text)
        self.status.setToolTip(job.status_text)
        self._fit_status()
        if c.hello is not None and c.hello is not self._built_for:
            self._built_for = c.hello
            self._rebuild_params()
        if getattr(self, "_render_when_idle", False) and not job.busy:
            self._render_when_idle = False
            self._eta_released()

    def _show_preview(self, buf: Any) -> None:
        fmt = _QIMAGE_FORMATS.get(buf.order)
        if buf.dtype != "u8" or fmt is None:
            return
        data = bytes(buf.data)
        img = QImage(data, buf.width, buf.height, buf.stride, fmt).copy()
        self.preview.setVisible(True)
        self.preview.setPixmap(
            QPixmap.fromImage(img).scaled(
                max(1, self.preview.width()), PREVIEW_H, Qt.KeepAspectRatio, Qt.SmoothTransformation
            )
        )

    def canvasChanged(self, canvas: Any) -> None:  # noqa: N802 - Krita's API name
        pass
