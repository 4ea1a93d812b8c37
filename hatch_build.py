"""Install the top-level magics/, presets/ and runtimes/ directories under kaito_jupyter.

The wheel gets them by force-include. An editable install gets a .pth file that puts a small
finder on sys.meta_path, so `kaito_jupyter.magics` imports straight from `magics/` and edits
show up without reinstalling.

The built lab extension (kaito_jupyter/labextension/, from the Jupyter builder hook) goes into the
wheel as shared data, share/jupyter/labextensions/kaito-jupyter/. Not into an editable wheel: an
editable install links the build instead (`jupyter-builder develop --overwrite .`, which
`make labextension` runs), so rebuilds show up live; a copied-in snapshot would go stale, and
reinstalling over the link would write the wheel's files back into the build directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SUBPACKAGES = ("magics", "presets", "runtimes")
LABEXTENSION = "kaito_jupyter/labextension"
LABEXTENSION_DATA = "share/jupyter/labextensions/kaito-jupyter"

FINDER = """\
import importlib.abc, importlib.util, sys

class KaitoJupyterSubpackages(importlib.abc.MetaPathFinder):
    roots = {roots!r}

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        root = cls.roots.get(fullname)
        if root is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, root + "/__init__.py", submodule_search_locations=[root]
        )

if KaitoJupyterSubpackages not in sys.meta_path:
    sys.meta_path.append(KaitoJupyterSubpackages)
"""


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        if version == "editable":
            roots = {f"kaito_jupyter.{name}": str(root / name) for name in SUBPACKAGES}
            out = Path(tempfile.mkdtemp(prefix="kaito-jupyter-editable-"))
            (out / "_kaito_jupyter_subpackages.py").write_text(FINDER.format(roots=roots))
            (out / "_kaito_jupyter_subpackages.pth").write_text(
                "import _kaito_jupyter_subpackages\n"
            )
            for name in ("_kaito_jupyter_subpackages.py", "_kaito_jupyter_subpackages.pth"):
                build_data["force_include_editable"][os.fspath(out / name)] = name
        else:
            for name in SUBPACKAGES:
                build_data["force_include"][os.fspath(root / name)] = f"kaito_jupyter/{name}"
            build_data["shared_data"][os.fspath(root / LABEXTENSION)] = LABEXTENSION_DATA
            build_data["shared_data"][os.fspath(root / "install.json")] = (
                f"{LABEXTENSION_DATA}/install.json"
            )
