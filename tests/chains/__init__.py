"""Chains that CLI tests run in ``python -m aiotasks`` subprocesses (as ``path/to/file.py:attr``)."""
