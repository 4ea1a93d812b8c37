"""IPython magics: `%kaito` and `%%kaito`.

    %load_ext kaito_jupyter
    %%kaito validate          # the cell is Workspace YAML, verbatim
    %kaito presets --tuning
    %kaito skus --cloud azure
    %kaito explain phi-3-mini-4k-instruct --instance-type Standard_NC6s_v3

The verbs are the `kaito` command's; errors print as messages, never as tracebacks
(set `%kaito --debug ...` to see one).
"""

from __future__ import annotations

import shlex
import sys

from IPython.core.magic import Magics, line_cell_magic, magics_class

USAGE = """usage: %kaito VERB [ARGS]   (or %%kaito VERB with YAML in the cell)
verbs:
  validate        check the cell's Workspace YAML (or -f FILE) like Kaito's admission webhook
  presets         list model presets (--tuning: only tunable ones)
  skus            list GPU instance types (--cloud azure|aws)
  explain PRESET --instance-type T [--count N]
"""


@magics_class
class KaitoMagics(Magics):
    @line_cell_magic
    def kaito(self, line: str, cell: str | None = None):
        from kaito_jupyter.errors import KaitoError
        from kaito_jupyter.presentation import error_text

        argv = shlex.split(line)
        debug = "--debug" in argv
        argv = [a for a in argv if a != "--debug"]
        if not argv or argv[0] in ("help", "-h", "--help"):
            print(USAGE)
            return None
        try:
            return self._run(argv, cell)
        except KaitoError as exc:
            if debug:
                raise
            print(f"error: {error_text(exc)}", file=sys.stderr)
        except SystemExit:  # argparse already printed the usage problem
            pass
        return None

    def _run(self, argv: list[str], cell: str | None):
        from kaito_jupyter import api, cli, config
        from kaito_jupyter.errors import KaitoError

        verb = argv[0]
        if (
            verb == "validate"
            and cell is not None
            and "-f" not in argv
            and "--filename" not in argv
        ):
            allowed = config.load().allowed_private_registries
            checked = api.check_text(cell, "<cell>", allowed_registries=allowed)
            for c in checked:
                ws = c.workspace
                print(f"workspace.kaito.sh/{ws.name} valid ({ws.mode}: {ws.preset_name})")
                for issue in c.warnings:
                    print(f"  {issue}")
            return None
        if verb not in ("validate", "presets", "skus", "explain"):
            raise KaitoError(f"unknown verb {verb!r}", hint="run `%kaito help`")
        cli.main(argv)
        return None


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(KaitoMagics)
