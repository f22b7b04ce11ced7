"""The work behind install.py, one module per concern; standard library only (it runs before the venv exists).

``torch_plan`` (which torch build from where), ``state`` (the state file that makes re-runs cheap), ``venv``
(the virtual environment and its packages), ``hosts`` (which hosts, found here or not), ``plugins`` (their installers, recorded), ``models`` (presets),
``selfcheck`` (start the backend, ``python -m backend check``), ``tools`` (the machine effects tests swap) and
``cli`` (flags, phases, uninstall, ``main``). install.py at the top is the entry point the README names.
"""
