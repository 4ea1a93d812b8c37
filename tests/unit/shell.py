"""The one IPython InteractiveShell the unit tests share, with `%load_ext kaito_jupyter`."""

from __future__ import annotations

from IPython.testing import globalipapp


def kaito_shell():
    # start_ipython runs once per process and then rebinds globalipapp.get_ipython to the
    # shell it made; a `from ... import get_ipython` taken before that returns None later.
    globalipapp.start_ipython()
    shell = globalipapp.get_ipython()
    shell.run_line_magic("load_ext", "kaito_jupyter")
    return shell
