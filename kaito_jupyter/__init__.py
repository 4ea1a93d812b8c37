"""kaito-jupyter: Kaito workspaces (serve and fine-tune open LLMs on GPU nodes) from JupyterLab."""

__version__ = "0.1.0"


def load_ipython_extension(ipython):  # %load_ext kaito_jupyter
    from kaito_jupyter.magics import load_ipython_extension as load

    load(ipython)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where `jupyter labextension develop` finds the built lab extension (see package.json)."""
    return [{"src": "labextension", "dest": "kaito-jupyter"}]
