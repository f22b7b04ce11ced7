"""Shared fixtures. Model fixtures build tiny random-weight pipelines once per test session."""

from __future__ import annotations

import logging
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never reach a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _no_process_state_between_tests(monkeypatch):
    """What one test sets up process-wide must not reach the next. ``backend serve`` (tests call cli.main)
    configures the ``layeredit`` logger once per process: INFO level and a handler on the sys.stderr of that
    moment, which is pytest's capture stream, closed when that test ends. Every later log line then printed a
    "Logging error" traceback, slowly enough that test_remote_hosts' 1 s hello timeout ran out when
    test_remote.py ran first. A fresh client token per test keeps ownership per test too."""
    monkeypatch.delenv("LAYEREDIT_CLIENT_TOKEN", raising=False)
    logger = logging.getLogger("layeredit")
    level, handlers, state = logger.level, list(logger.handlers), dict(vars(logger))
    yield
    for handler in [h for h in logger.handlers if h not in handlers]:
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(level)
    for name in ("_layeredit_configured", "_layeredit_file"):
        if name in state:
            setattr(logger, name, state[name])
        else:
            vars(logger).pop(name, None)


@pytest.fixture(scope="session")
def tiny_inpaint_dir(tmp_path_factory):
    """A tiny SD-inpainting-shaped diffusers folder on disk (load it through backend.models)."""
    from tests.tiny_models import build_tiny_inpaint

    return build_tiny_inpaint(tmp_path_factory.mktemp("models") / "tiny-inpaint")


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A tiny SD text-to-image diffusers folder on disk (used by Imagic)."""
    from tests.tiny_models import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def xvfb_server():
    """One X server for every real-host test of the session (Krita, GIMP's GUI in its chroot), on a display
    number Xvfb found free, ready before the first host starts (tests/hosts/xvfb.py)."""
    from tests.hosts import xvfb

    if not xvfb.available():
        if os.environ.get("LAYEREDIT_REQUIRE_HOSTS") == "1":
            pytest.fail("Xvfb is not installed (tests/hosts/krita/setup.sh installs it)")
        pytest.skip("Xvfb is not installed")
    server = xvfb.start()
    yield server
    server.stop()
