"""The host plugins on a REMOTE backend (issue 7): the Krita docker's controller and the GIMP plug-in choose a
backend from pasted text, then run jobs through a real in-process CurveZMQ server that admits only listed keys.
Images travel as the hosts crop them (the region the op needs), exactly as with a local backend."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import zmq

from tests import fake_krita

fake_krita.install()

from backend import remote  # noqa: E402
from backend.server import Server, ServerConfig  # noqa: E402
from krita_plugin.layeredit import controller as krita_controller  # noqa: E402
from krita_plugin.layeredit.controller import Controller  # noqa: E402
from protocol import connection  # noqa: E402
from protocol.errors import ErrorCode, ProtocolError  # noqa: E402
from protocol.hostkit import JobState, Rect, load_choice, mode_by_label, plan_region  # noqa: E402
from tests.hosts.gimp import fake_gimp  # noqa: E402
from tests.hosts.krita.testops import GATE  # noqa: E402
from tests.hosts.krita.testops import registry as krita_registry  # noqa: E402
from tests.test_krita_plugin import layer_doc, pixels, select, wait_for  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gimp_plugin" / "layeredit"))
from layeredit_gimp import pdbargs, plugin  # noqa: E402

from backend.ops import Registry  # noqa: E402
from tests.test_gimp_plugin import ImagicStandIn, InvertOp, _image  # noqa: E402

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Private config and runtime dirs: no local backend file, and the choice is saved under tmp_path."""
    monkeypatch.setenv("LAYEREDIT_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("LAYEREDIT_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path


@contextmanager
def remote_backend(tmp_path: Path, registry):
    kdir = tmp_path / "keys"
    kdir.mkdir(exist_ok=True)
    keys = remote.init_server(kdir)
    cfg = ServerConfig(
        host="127.0.0.1",
        connection_file=tmp_path / "server-side-backend.json",
        curve_secret_key=keys.secret,
        key=keys.hmac_key,
        authorized_keys=kdir / remote.AUTHORIZED_FILE,
        report_models=False,
    )
    GATE.clear()
    srv = Server(cfg, registry, models_factory=None).start()
    try:
        yield srv, keys, kdir
    finally:
        GATE.set()
        srv.stop()


def _endpoint(srv: Server) -> str:
    return srv.endpoint.replace("0.0.0.0", "127.0.0.1")


@pytest.fixture
def app():
    fake_krita.Krita._instance = None
    return fake_krita.Krita.instance()


# -- Krita ---------------------------------------------------------------------------------------------
def test_krita_job_on_a_remote_backend_returns_a_new_layer(app, dirs):
    with remote_backend(dirs, krita_registry()) as (srv, _keys, kdir):
        info = remote.client_new("artist", _endpoint(srv), kdir)
        c = Controller(app, None)
        assert c.choice.local
        assert c.choose(connection.to_string(info))  # "Paste connection string…"
        assert not c.choice.local and c.remote and c.choice.name == "artist"
        wait_for(lambda: c.connected, c)
        assert "remote artist" in c.connection_text
        assert not c.client.info.pid and c.client.remote
        doc, node = layer_doc(app, w=700, h=60, layer_rect=(0, 0, 700, 60))
        before = pixels(node, doc, "U8").copy()
        select(doc, 10, 8, 6, 4)
        params = c.forms["erase"].params()
        assert c.run(doc, node, "Erase", params)
        wait_for(lambda: not c.job.busy, c)
        assert c.job.state == JobState.DONE, c.job.status_text
        assert [n.name() for n in doc.topLevelNodes()] == ["source", "Erase"]
        out = pixels(c.last.layer, doc, "U8")
        inside = np.zeros((60, 700), bool)
        inside[8:12, 10:16] = True
        # the selection plus what erase reads past it with the job's grow (its fill's crop, slid inside the layer):
        # not the canvas
        layer = Rect(0, 0, 700, 60)
        region = plan_region(mode_by_label("Erase"), layer, layer, Rect(10, 8, 6, 4), params=params).region
        assert c.last.sent["region"] == region.as_tuple() and region.right < 700
        in_region = np.zeros_like(inside)
        in_region[region.y : region.bottom, region.x : region.right] = True
        kept = in_region & ~inside
        assert (out[inside] == [0, 0, 255, 255]).all() and np.array_equal(out[kept], before[kept])
        assert not out[~in_region].any()  # the new layer holds only the region that travelled
        # progress and cancel work as locally
        assert c.run(doc, node, "Imagic", {"prompt": "x", "eta": [0.7]})
        wait_for(lambda: c.job.stage == "tune", c)
        c.cancel()
        wait_for(lambda: not c.job.busy, c)
        assert c.job.state == JobState.CANCELLED
        c.disconnect()
        # the choice persists: a new docker (or GIMP) connects to the same remote backend
        again = Controller(app, None)
        assert again.remote and again.choice == c.choice
        assert again.connect()
        wait_for(lambda: again.connected, again)
        again.disconnect()


def test_krita_refused_key_shows_the_admin_command_then_works_once_allowed(app, dirs, monkeypatch):
    admitted_timeout = krita_controller.REMOTE_HELLO_TIMEOUT_S
    monkeypatch.setattr(krita_controller, "REMOTE_HELLO_TIMEOUT_S", 1.0)  # a refused key never answers
    with remote_backend(dirs, krita_registry()) as (srv, keys, kdir):
        c = Controller(app, None)
        assert c.choose(f"{_endpoint(srv)} {keys.public} {keys.hmac_key}")  # address + server key + key
        pub = c.choice.pending_key
        assert f"keys allow {pub}" in c.connection_text  # said at once, before the server stays silent
        wait_for(lambda: c.client is None, c)  # the server refuses the handshake: no answer at all
        assert f"python -m backend keys allow {pub} " in c.connection_text
        assert not c.connected
        remote.AuthorizedKeys(kdir / remote.AUTHORIZED_FILE).allow(pub, "newcomer")
        # the admitted handshake gets the product's timeout: 1 s is too short on a loaded machine
        monkeypatch.setattr(krita_controller, "REMOTE_HELLO_TIMEOUT_S", admitted_timeout)
        assert c.connect()
        wait_for(lambda: c.connected, c)
        c.disconnect()


def test_krita_bad_pasted_text_keeps_the_old_backend(app, dirs):
    c = Controller(app, None)
    assert not c.choose("layeredit1:garbage!")
    assert "damaged" in c.connection_text and c.choice.local and load_choice().local


# -- GIMP ----------------------------------------------------------------------------------------------
def _gimp_registry() -> Registry:
    return Registry({"erase": InvertOp, "imagic": ImagicStandIn})


def test_gimp_connect_then_erase_on_a_remote_backend(dirs):
    with remote_backend(dirs, _gimp_registry()) as (srv, _keys, kdir):
        info = remote.client_new("gimp-user", _endpoint(srv), kdir)
        string = connection.to_string(info)
        said = plugin.run_connect(fake_gimp.Config(**{plugin.CONNECT_ARG: string}))
        assert "Remote: gimp-user" in said and not load_choice().local
        gimp, gegl = fake_gimp.make_modules()
        image, src = _image()
        image.select_rectangle("REPLACE", 14, 10, 6, 5)
        before = bytes(src.buffer.data)
        config = fake_gimp.Config(amount=255, steps=3, **{pdbargs.SELECT: False, pdbargs.EXTRA: "{}"})
        registered = {"amount", "steps", pdbargs.SELECT, pdbargs.EXTRA}
        out = plugin.run_job(gimp, gegl, image, src, mode_erase(), config, registered, dirs / "no-plugin-dir")
        assert image.layers == [out.layer, src] and out.layer.name == "Erase"
        assert bytes(src.buffer.data) == before and out.layer.buffer.data != before
        assert "Erase: inverting 3/3" in [c[1] for c in gimp.progress_calls if c[0] == "text"]
        # back to local: with no local backend and no installer config, the error says what to run
        assert "local" in plugin.run_connect(fake_gimp.Config(**{plugin.CONNECT_ARG: "local"}))
        with pytest.raises(ProtocolError) as exc:
            plugin.run_job(gimp, gegl, image, src, mode_erase(), config, registered, dirs / "no-plugin-dir")
        assert exc.value.code == ErrorCode.NO_BACKEND


def test_gimp_refused_key_names_the_admin_command_and_never_starts_a_local_backend(dirs, monkeypatch):
    monkeypatch.setenv("LAYEREDIT_HEARTBEAT_TIMEOUT", "1")
    with remote_backend(dirs, _gimp_registry()) as (srv, keys, _kdir):
        text = f"{_endpoint(srv)}\n{keys.public}\n{keys.hmac_key}"
        with pytest.raises(ProtocolError) as exc:
            plugin.run_connect(fake_gimp.Config(**{plugin.CONNECT_ARG: text}))
        pub = load_choice().pending_key
        assert exc.value.code == ErrorCode.NO_BACKEND and f"keys allow {pub} " in exc.value.message
        gimp, gegl = fake_gimp.make_modules()
        image, src = _image()
        image.select_rectangle("REPLACE", 14, 10, 6, 5)
        config = fake_gimp.Config(**{pdbargs.EXTRA: "{}"})
        with mock.patch("layeredit_gimp.backend.Launcher") as launcher:
            with pytest.raises(ProtocolError) as exc:
                plugin.run_job(gimp, gegl, image, src, mode_erase(), config, {pdbargs.EXTRA}, dirs)
        assert f"keys allow {pub} " in exc.value.message and not launcher.called
        assert image.layers == [src]


def test_gimp_bad_connection_text_is_a_clear_error():
    with pytest.raises(ProtocolError) as exc:
        plugin.run_connect(fake_gimp.Config(**{plugin.CONNECT_ARG: "gpu:5555 only-two"}))
    assert exc.value.code == ErrorCode.BAD_CONNECTION and "SERVER_KEY" in exc.value.message


def test_gimp_registers_the_connect_procedure_with_one_string_argument():
    gimp, gobject = mock.MagicMock(), mock.MagicMock()
    assert plugin.CONNECT_PROC in plugin.procedure_names()
    proc = plugin.create_procedure("plug-in", plugin.CONNECT_PROC, print, gimp, gobject, Path("."))
    gimp.ImageProcedure.new.assert_called_once_with(
        "plug-in", "plug-in-layeredit-connect", gimp.PDBProcType.PLUGIN, print, None
    )
    proc.add_menu_path.assert_called_once_with(plugin.menu_path(plugin.CONNECT_PROC))  # last in AI Edit
    proc.set_menu_label.assert_called_once_with("Connect to backend…")
    ((args, _),) = [(c.args, c.kwargs) for c in proc.add_string_argument.call_args_list]
    assert args[0] == plugin.CONNECT_ARG and args[3] == "local"


def mode_erase():
    return plugin.mode_of("plug-in-layeredit-erase")


def test_reconnect_and_fetch_through_the_chosen_remote_connection(dirs):
    """A host that lost its socket mid-job reconnects with the same imported connection (same admitted key,
    so the same owner) and fetches the running job: its progress and result come to the new socket."""
    from protocol.client import Client
    from protocol.hostkit import choose_backend
    from protocol.wire import Buffer

    with remote_backend(dirs, krita_registry()) as (srv, _keys, kdir):
        choice = choose_backend(connection.to_string(remote.client_new("artist", _endpoint(srv), kdir)))
        first = Client.connect(load_choice().connection_file)
        image = Buffer(np.full((8, 8, 4), 7, np.uint8).tobytes(), 8, 8, 4, "u8", "RGBA")
        job = first.submit("imagic", {"prompt": "x", "eta": [0.7]}, image=image)
        assert first.status(job, timeout=5.0)  # accepted and known before the socket is dropped
        first.close(linger_ms=0)
        again = Client.connect(choice.connection_file)
        seen = []
        try:

            def progress(p):
                seen.append(p.stage)
                GATE.set()  # the re-attached job reports here: let it finish

            result = again.fetch(job, on_progress=progress, timeout=30.0)
        finally:
            again.close()
        assert seen and seen[0] == "tune"
        assert result.image is not None and bytes(result.image.data) == image.data
