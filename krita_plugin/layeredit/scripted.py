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

    def _wait_done(self) -> None:
        c = self.docker.controller
        job = self.jobs[len(self.results)]
        kill = job.get("kill_backend")  # {"pid": N, "stage": "tune"}: the backend dies mid-job
        if kill and c.job.busy and c.job.stage == kill["stage"] and not hasattr(self, "t_kill"):
            os.kill(int(kill["pid"]), signal.SIGKILL)
            self.t_kill = time.monotonic()
            self.step("killed_backend")
        if c.job.busy:
            if time.monotonic() - self.t_run > job.get("timeout_s", 240):
                c.cancel()
                self.finish(error="timeout", status=c.job.status_text, jobs=self.results)
            return
        self.done_timer.stop()
        self.results.append(self._record(job, c))
        if len(self.results) < len(self.jobs):
            QTimer.singleShot(0, self.guarded(self._start_job))
            return
        self.finish(**self.results[-1], jobs=self.results)

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
            "progress_text": self.docker.progress.text(),
            "preview_shown": self.docker.preview.pixmap() is not None
            and not self.docker.preview.pixmap().isNull(),
        }
        if self.spec.get("screenshot"):
            self.docker.grab().save(str(self.out / f"docker{suffix}.png"))
            self._screenshot_window(self.out / f"window{suffix}.png")
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
        for _ in range(20):  # let the canvas repaint (and the marching ants start) before grabbing
            QApplication.processEvents(QEventLoop.AllEvents, 50)
            time.sleep(0.02)
        k.activeWindow().qwindow().grab().save(str(path))


def install_hook(spec_path: str) -> None:
    job = ScriptedJob(spec_path)
    notifier = Krita.instance().notifier()
    notifier.setActive(True)
    notifier.windowCreated.connect(lambda: QTimer.singleShot(500, job.guarded(job.start)))
    globals()["_job"] = job  # keep it alive
