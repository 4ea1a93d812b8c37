"""IPython magics: `%kaito` and `%%kaito`.

    %load_ext kaito_jupyter
    %%kaito apply --wait        # the cell is Kaito Workspace YAML, verbatim; live progress
    ws = %kaito get workspace-phi-3-mini
    %%kaito chat workspace-phi-3-mini
    What is QLoRA?

`%kaito help` lists the verbs, `%kaito VERB --help` their flags. Errors print as short
messages (a validation error points at the YAML line), never as tracebacks unless
`%kaito --debug VERB ...`. `{var}` in a cell is replaced by the notebook's variable.

This module only imports IPython: `%load_ext kaito_jupyter` stays fast, and everything else
(the command layer, backends, widgets) is imported by the verb that needs it.
"""

from __future__ import annotations

import shlex
import sys

from IPython.core.magic import Magics, line_cell_magic, magics_class


@magics_class
class KaitoMagics(Magics):
    def __init__(self, shell=None, **kwargs):
        super().__init__(shell, **kwargs)
        self._session = None

    @property
    def session(self):
        """The verbs' state in this kernel: the backend, conversations (made on first use)."""
        if self._session is None:
            from kaito_jupyter.magics.verbs import Session

            self._session = Session(self.shell)
        return self._session

    @line_cell_magic
    def kaito(self, line: str, cell: str | None = None):
        from kaito_jupyter.magics.args import HelpShown, UsageError, help_text, parse
        from kaito_jupyter.magics.errors import error_text

        from kaito_jupyter.errors import KaitoError

        sources: dict[str, str] = {}
        debug = False
        try:
            try:
                argv = shlex.split(line)
            except ValueError as exc:  # an unclosed quote
                raise UsageError(f"cannot read the arguments: {exc}") from None
            debug = "--debug" in argv
            argv = [a for a in argv if a != "--debug"]
            args = parse(argv)
            if args.verb == "help":  # no need to load the command layer for this
                print(help_text(args.topic))
                return None
            return self.session.run(args, cell, sources)
        except HelpShown as shown:
            print(shown.text)
        except KaitoError as exc:
            if debug:
                raise
            print(error_text(exc, sources), file=sys.stderr)
        except KeyboardInterrupt:
            if debug:
                raise
            print("interrupted", file=sys.stderr)
        return None


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(KaitoMagics)
