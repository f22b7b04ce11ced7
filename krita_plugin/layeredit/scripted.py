"""A scripted job for the real-Krita test: it drives the docker's own widgets and code, then reports.

Enabled only when LAYEREDIT_KRITA_SCRIPT names a JSON file (see tests/test_krita_host.py): at window creation
it builds a document from raw pixels, selects, picks the mode and parameters in the docker, presses Run, waits
on Qt's loop (counting timer ticks to show the UI stayed live), writes ``report.json`` plus raw pixel dumps, and
ends Krita with os._exit (a clean exit from a script segfaults Krita 5.1).
"""

from __future__ import annotations

import json
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Any

from krita import Krita, Selection
from PyQt5.QtCore import QTimer

ANTS_MIN_PX = 50  # black pixels the marching ants add to a screen grab of the canvas (a 40 px disc: ~440)


class ScriptedJob:
    def __init__(self, spec_path: str):
        self.spec = json.loads(Path(spec_path).read_text("utf-8"))
        self.out = Path(self.spec["out_dir"])
        self.t0 = time.monotonic()
        self.report: dict[str, Any] = {"steps": []}
        self.ticks = 0
        self.timers: list[QTimer] = []

    def step(self, name: str, **data: Any) -> None:
        self.report["steps"].append([round(time.monotonic() - self.t0, 3), name])
        self.report.update(data)
        (self.out / "report.partial.json").write_text(json.dumps(self.report, default=str), "utf-8")

    def finish(self, **data: Any) -> None:
        self.report.update(data)
        self.report["total_s"] = round(time.monotonic() - self.t0, 3)
        (self.out / "report.json").write_text(json.dumps(self.report, indent=1, default=str), "utf-8")
        os._exit(0)

    def guarded(self, fn):
        def call(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - report, then leave: a hung Krita helps no test
                self.finish(error=traceback.format_exc())

        return call

    def every(self, ms: int, fn) -> QTimer:
        t = QTimer()
        t.timeout.connect(self.guarded(fn))
        t.start(ms)
        self.timers.append(t)
        return t

    # -- the script -------------------------------------------------------------------------------
    def start(self) -> None:
        s = self.spec
        k = Krita.instance()
        doc = k.createDocument(
            s["width"], s["height"], "scripted", s.get("model", "RGBA"), s.get("depth", "U8"), "", 72.0
        )
        k.activeWindow().addView(doc)
        k.setActiveDocument(doc)
        layer = doc.createNode("source", "paintlayer")
        doc.rootNode().addChildNode(layer, None)
        lx, ly, lw, lh = s["layer_rect"]
        layer.setPixelData(Path(s["layer_raw"]).read_bytes(), lx, ly, lw, lh)
        doc.setActiveNode(layer)
        if s.get("selection"):
            sel = Selection()
            sel.select(*s["selection"], 255)
            doc.setSelection(sel)
        elif s.get("selection_raw"):  # a drawn (lasso) selection: 1 byte per pixel over the whole canvas
            sel = Selection()
            sel.setPixelData(Path(s["selection_raw"]).read_bytes(), 0, 0, s["width"], s["height"])
            doc.setSelection(sel)
        doc.waitForDone()
        self.doc, self.layer = doc, layer
        self.step("document", layers_before=[n.name() for n in doc.topLevelNodes()])
        from .docker import INSTANCES, LayerEditDocker

        self.docker = INSTANCES[0] if INSTANCES else LayerEditDocker()
        self.step("docker", docker_instances=len(INSTANCES))
        if s.get("window"):  # [w, h]: a small Krita window, the docker docked in it and shown
            win = k.activeWindow().qwindow()
            win.showNormal()
            win.resize(*s["window"])
            self.docker.setFloating(False)
            self.docker.show()
            self.docker.raise_()

        if s.get("start_backend"):
            self.docker.start_backend()
        self.every(20, self._count)
        self.waiting = self.every(100, self._wait_connected)

    def _count(self) -> None:
        self.ticks += 1

    def _wait_connected(self) -> None:
        c = self.docker.controller
        if not c.connected:
            if time.monotonic() - self.t0 > self.spec.get("connect_timeout_s", 60):
                self.finish(
                    error="not connected: " + c.connection_text, log=self.docker.log_view.toPlainText()
                )
            if c.client is None and self.docker.launcher is None and self.ticks % 25 == 0:
                self.docker.connect_backend(ask=False)
            return
        self.waiting.stop()
        import zmq

        self.step(
            "connected",
            connection=c.connection_text,
            ops=sorted(c.forms),
            zmq=[zmq.__version__, zmq.__file__],
        )
        self.jobs = self.spec.get("jobs") or [self.spec]
        self.results: list[dict[str, Any]] = []
        self._start_job()

    def _start_job(self) -> None:
        """Set the docker's widgets as a user would, then press Run (or release the eta slider)."""
        job, d, c = self.jobs[len(self.results)], self.docker, self.docker.controller
        d.mode_box.setCurrentText(job["mode"])
        d._rebuild_params()
        d.source_box.setCurrentIndex(d.source_box.findData(job.get("source", "layer")))
        d.prompt.setText(job.get("prompt", ""))
        d.select_after.setChecked(bool(job.get("set_selection")))
        d.advanced_toggle.setChecked(bool(job.get("show_advanced")))
        for name, value in job.get("params", {}).items():
            _, w = d.param_widgets[name]
            for setter in ("setValue", "setChecked", "setCurrentText", "setText"):
                if hasattr(w, setter):
                    getattr(w, setter)(value if setter != "setText" else str(value))
                    break
        if "eta" in job:
            d.eta_slider.setValue(round(job["eta"] * 100))
        if job.get("busy_loop_when_done_s"):
            self._hold_when_done(c, job["busy_loop_when_done_s"])
        self.ticks_at_run = self.ticks
        self.t_run = time.monotonic()
        if job.get("trigger") == "eta_release":
            d._eta_released()
            ok = c.job.busy
        elif job.get("trigger") == "select_object_action":  # Tools > Scripts > Select Object (LayerEdit)
            Krita.instance().action("layeredit_select_object").trigger()
            ok = c.job.busy or c.job.state.value == "done"
        else:
            ok = d.run_clicked()
        self.step(f"run {len(self.results)}", run_ok=ok, status_after_run=d.status.text())
        if not ok:
            self.results.append({"outcome": {"state": c.job.state.value, "message": c.job.status_text}})
            self.finish(**self.results[-1], jobs=self.results)
        if job.get("close_document_after_run"):
            self.doc.setModified(False)
            self.doc.close()
            self.step("closed_document")
        self.done_timer = self.every(50, self._wait_done)

    def _hold_when_done(self, c: Any, seconds: float) -> None:
        """Run a nested event loop inside the callback that delivers the result (as a modal dialog or another
        plugin's processEvents would). Krita 5.1 delivers its activation of the new layer only once that
        callback returns, so everything the plugin scheduled meanwhile runs first: the order that made the next
        job read the result layer about 1 run in 3, made certain."""
        from PyQt5.QtCore import QEventLoop
        from PyQt5.QtWidgets import QApplication

        refresh = c.on_change

        def on_change() -> None:
            refresh()
            if c.job.busy:
                return
            c.on_change = refresh
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                QApplication.processEvents(QEventLoop.AllEvents, 50)
                time.sleep(0.01)
            active = self.doc.activeNode()
            self.step("held_loop", active_after_held_loop=None if active is None else active.name())

        c.on_change = on_change

    def _wait_done(self) -> None:
        c = self.docker.controller
        job = self.jobs[len(self.results)]
        kill = job.get("kill_backend")  # {"pid": N, "stage": "tune"}: the backend dies mid-job
        if kill and c.job.busy and c.job.stage == kill["stage"] and not hasattr(self, "t_kill"):
            os.kill(int(kill["pid"]), signal.SIGKILL)
            self.t_kill = time.monotonic()
            self.step("killed_backend")
        again = job.get("reconnect_at_stage")  # press Reconnect while the job runs: it must be fetched
        if again and c.job.busy and c.job.stage == again and not hasattr(self, "reconnected"):
            self.reconnected = {"job": c.job.job_id, "step": c.job.step, "steps_after": 0}
            self.docker.connect_backend(ask=False)
            self.last_step = c.job.step
            self.step("reconnected")
        elif hasattr(self, "reconnected") and c.job.busy and c.job.step != self.last_step:
            self.reconnected["steps_after"] += 1  # progress that came through the new socket
            self.last_step = c.job.step
        if c.job.busy:
            if time.monotonic() - self.t_run > job.get("timeout_s", 240):
                c.cancel()
                self.finish(error="timeout", status=c.job.status_text, jobs=self.results)
            return
        self.done_timer.stop()
        if job.get("check_selection_shown"):
            QTimer.singleShot(1000, self.guarded(lambda: self._check_shown(job, c)))
        elif self.spec.get("window"):  # let Qt repaint before the screen is grabbed
            QTimer.singleShot(300, self.guarded(lambda: self._recorded(job, c)))
        else:
            self._recorded(job, c)

    def _recorded(self, job: dict, c: Any, **extra: Any) -> None:
        self.results.append({**self._record(job, c), **extra})
        if len(self.results) < len(self.jobs):
            QTimer.singleShot(0, self.guarded(self._start_job))
            return
        self.finish(**self.results[-1], jobs=self.results)

    def _canvas_shot(self, name: str) -> int:
        """Grab the canvas from the screen (a GL canvas does not grab() itself) and count its pure black
        pixels: the marching ants' dashes (the image here has none)."""
        from PyQt5.QtCore import QPoint
        from PyQt5.QtGui import QImage
        from PyQt5.QtWidgets import QApplication, QWidget

        win = Krita.instance().activeWindow().qwindow()
        canvas = [
            w
            for w in win.findChildren(QWidget)
            if w.metaObject().className() in ("KisOpenGLCanvas2", "KisQPainterCanvas") and w.isVisible()
        ][0]
        at = canvas.mapToGlobal(QPoint(0, 0))
        shot = QApplication.primaryScreen().grabWindow(0, at.x(), at.y(), canvas.width(), canvas.height())
        shot.save(str(self.out / name))
        img = shot.toImage().convertToFormat(QImage.Format_RGB32)
        bits = img.constBits()
        bits.setsize(img.byteCount())
        return bytes(bits).count(b"\x00\x00\x00\xff")

    def _check_shown(self, job: dict, c: Any, tries: int = 0) -> None:
        """The selection is shown when hiding Krita's selection display removes black (ants) pixels. Polled:
        on a loaded machine the canvas may repaint late, so look again (up to ~15 s) before calling it absent."""
        shown = self._canvas_shot("canvas_selection_shown.png")
        toggle = Krita.instance().action("toggle_display_selection")
        toggle.trigger()

        def hidden() -> None:
            base = self._canvas_shot("canvas_selection_hidden.png")
            toggle.trigger()  # shown again, and repainted before the window is grabbed
            if shown - base <= ANTS_MIN_PX and tries < 15:
                QTimer.singleShot(500, self.guarded(lambda: self._check_shown(job, c, tries + 1)))
                return
            QTimer.singleShot(500, self.guarded(lambda: self._recorded(job, c, ants_px=shown - base)))

        QTimer.singleShot(500, self.guarded(hidden))

    def _ui(self, suffix: str) -> dict[str, Any]:
        """Which of the docker's always-needed widgets an artist can see, and a screenshot of the window."""
        from PyQt5.QtWidgets import QApplication

        window = Krita.instance().activeWindow().qwindow()
        screen = QApplication.primaryScreen()
        g = window.frameGeometry()
        screen.grabWindow(0, g.x(), g.y(), g.width(), g.height()).save(str(self.out / f"screen{suffix}.png"))
        return _ui_of(self.docker, window, screen.geometry())

    def _record(self, job: dict, c: Any) -> dict[str, Any]:
        """What the test checks about one job; pixels go to raw files (suffix _N for the N-th job, N > 0)."""
        n = len(self.results)
        suffix = f"_{n}" if n else ""
        out: dict[str, Any] = {
            "outcome": {"state": c.job.state.value, "message": c.job.status_text, "code": c.job.error_code},
            "meta": c.last.meta if c.last is not None else None,
            "sent": c.last.sent if c.last is not None else None,
            "job_s": round(time.monotonic() - self.t_run, 3),
            "ui_ticks_while_running": self.ticks - self.ticks_at_run,
            "shm": bool(getattr(c.client, "shm_active", False)),  # did pixels travel through shared memory
            "progress_text": self.docker.progress.text(),
            "preview_shown": self.docker.preview.pixmap() is not None
            and not self.docker.preview.pixmap().isNull(),
        }
        if self.spec.get("screenshot"):
            self.docker.grab().save(str(self.out / f"docker{suffix}.png"))
            self._screenshot_window(self.out / f"window{suffix}.png")
        if self.spec.get("window"):
            out["ui"] = self._ui(suffix)
        if hasattr(self, "reconnected"):
            out["reconnected"] = self.reconnected
        if not job.get("close_document_after_run"):
            doc, s = self.doc, self.spec
            w, h = s["width"], s["height"]
            doc.waitForDone()
            out["layers"] = [n.name() for n in doc.topLevelNodes()]
            (self.out / f"source_after{suffix}.raw").write_bytes(bytes(self.layer.pixelData(0, 0, w, h)))
            if c.last is not None and c.last.layer is not None:
                res = c.last.layer
                out["result_layer"] = res.name()
                out["result_above_source"] = out["layers"].index(res.name()) > out["layers"].index("source")
                (self.out / f"result{suffix}.raw").write_bytes(bytes(res.pixelData(0, 0, w, h)))
            sel = doc.selection()
            out["selection_after"] = None if sel is None else [sel.x(), sel.y(), sel.width(), sel.height()]
            if sel is not None:
                (self.out / f"selection_after{suffix}.raw").write_bytes(bytes(sel.pixelData(0, 0, w, h)))
            if c.last is not None and c.last.masks:  # the masks the backend returned, over the whole canvas
                out["masks"] = sorted(c.last.masks)
                for name, data in c.last.masks.items():
                    canvas = _on_canvas(data, c.last.sent["region"], w, h)
                    (self.out / f"mask_{name}{suffix}.raw").write_bytes(canvas)
        if hasattr(self, "t_kill"):
            out["failed_after_kill_s"] = round(time.monotonic() - self.t_kill, 3)
        return out

    def _screenshot_window(self, path: Path) -> None:
        """Krita's main window (canvas fitted to the view, marching ants, dockers), for docs/images."""
        from PyQt5.QtCore import QEventLoop
        from PyQt5.QtWidgets import QApplication

        k = Krita.instance()
        self.doc.refreshProjection()
        self.doc.waitForDone()
        fit = k.action("zoom_to_fit")
        if fit is not None:
            fit.trigger()
        for _ in range(80):  # let the canvas repaint (and the marching ants start: seconds) before grabbing
            QApplication.processEvents(QEventLoop.AllEvents, 50)
            time.sleep(0.05)
        window = k.activeWindow().qwindow()
        g = (
            window.frameGeometry()
        )  # from the screen: a GL canvas's decorations (the ants) do not grab() themselves
        QApplication.primaryScreen().grabWindow(0, g.x(), g.y(), g.width(), g.height()).save(str(path))


def _on_canvas(mask: bytes, region: Any, w: int, h: int) -> bytes:
    """A region-sized 8-bit mask placed on a zeroed w x h canvas (the region lies inside the canvas)."""
    rx, ry, rw, rh = region
    canvas = bytearray(w * h)
    for row in range(rh):
        start = (ry + row) * w + rx
        canvas[start : start + rw] = mask[row * rw : (row + 1) * rw]
    return bytes(canvas)


def _visible_in(widget: Any, docker: Any, screen: Any) -> bool:
    """Shown whole: inside the docker's content (a layout out of room pushes its last rows past the bottom,
    where they are clipped), the docker's content inside its dock, and all of it on the screen."""
    from PyQt5.QtCore import QPoint, QRect

    content = docker.widget()
    rect = QRect(widget.mapTo(content, QPoint(0, 0)), widget.size())
    in_dock = docker.rect().contains(QRect(content.mapTo(docker, QPoint(0, 0)), content.size()))
    on_screen = screen.contains(QRect(widget.mapToGlobal(QPoint(0, 0)), widget.size()))
    return widget.isVisible() and content.rect().contains(rect) and in_dock and on_screen


def _ui_of(docker: Any, window: Any, screen: Any) -> dict[str, Any]:
    d = docker
    below = (
        d.status.mapTo(d, d.status.rect().topLeft()).y()
        - d.progress.mapTo(d, d.progress.rect().bottomLeft()).y()
    )
    return {
        "visible": {
            "run_button": _visible_in(d.run_button, d, screen),
            "cancel_button": _visible_in(d.cancel_button, d, screen),
            "progress": _visible_in(d.progress, d, screen),
            "status": _visible_in(d.status_box, d, screen),
        },
        "status_below_progress_px": below,
        "advanced_open": d.advanced_box.isVisible(),
        "form_scrolls": d.scroll.verticalScrollBar().maximum() > 0,
        "preview_visible": d.preview.isVisible(),
        "docker_size": [d.width(), d.height()],
        "window_size": [window.width(), window.height()],
        "status_text": d.status.text(),
        "status_whole": d.status_box.verticalScrollBar().maximum() == 0,  # no part scrolled out of view
        "progress_format": d.progress.format(),
        "connection_line": d.conn_label.text(),
        "connection_tip": d.conn_label.toolTip(),
        "eta_title": d.eta_title.text(),
        "eta_tip": d.eta_slider.toolTip(),
        "select_after_visible": d.select_after.isVisible(),
        "units": {
            name: w.suffix()
            for name, (_f, w) in d.param_widgets.items()
            if hasattr(w, "suffix") and w.suffix()
        },
        "title": d.windowTitle(),
    }


def install_hook(spec_path: str) -> None:
    job = ScriptedJob(spec_path)
    notifier = Krita.instance().notifier()
    notifier.setActive(True)
    notifier.windowCreated.connect(lambda: QTimer.singleShot(500, job.guarded(job.start)))
    globals()["_job"] = job  # keep it alive
