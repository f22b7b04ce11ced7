"""The Krita plugin (``layeredit/``, pykrita layout) and its installer (``installer.py``, stdlib only)."""
