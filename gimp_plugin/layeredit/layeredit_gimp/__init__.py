"""The GIMP 3 side of LayerEdit: pixel I/O, PDB arguments from op schemas, jobs, the cancel guard.

Modules take GIMP's ``Gimp``/``Gegl`` modules as arguments instead of importing them, so the logic runs
(and is tested) without GIMP; only ``layeredit.py`` imports ``gi``.
"""
