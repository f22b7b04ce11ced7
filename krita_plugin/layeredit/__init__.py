"""LayerEdit for Krita: Erase, Replace and Imagic as new layers, computed by the local backend.

Krita imports this package at start. The installer vendors ``protocol/`` (and, for Krita's bundled Python,
pyzmq) into ``_vendor/``, which goes first on sys.path so the plugin never depends on the user's site-packages.
"""

from __future__ import annotations

import os
import sys

_VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vendor")
if os.path.isdir(_VENDOR):
    # protocol/ itself is vendored here, so this one insert must come before the shared helper is importable
    sys.path.insert(0, _VENDOR)
    from protocol.vendoring import put_first_on_path

    put_first_on_path(_VENDOR)  # and once only, even when Krita re-imports the package

try:
    from krita import DockWidgetFactory, DockWidgetFactoryBase, Krita
except ImportError:  # imported outside Krita (tests use a fake ``krita``): the submodules stay importable
    Krita = None

if Krita is not None:
    from .docker import LayerEditDocker

    Krita.instance().addDockWidgetFactory(
        DockWidgetFactory("layeredit_docker", DockWidgetFactoryBase.DockRight, LayerEditDocker)
    )
    from .actions import LayerEditActions

    Krita.instance().addExtension(LayerEditActions(Krita.instance()))  # Tools > Scripts > Select Object
    if os.environ.get("LAYEREDIT_KRITA_SCRIPT"):  # the real-Krita test drives the plugin's own code
        from .scripted import install_hook

        install_hook(os.environ["LAYEREDIT_KRITA_SCRIPT"])
