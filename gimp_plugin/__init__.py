"""GIMP 3 plug-in (``layeredit/``, installed as is) and its installer."""
