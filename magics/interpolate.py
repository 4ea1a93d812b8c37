"""`{var}` in a cell: replaced by the Python variable's value, as jupyter-ai's `%%ai` does.

Only a brace pair holding a dotted name whose first part is a variable of the notebook is
replaced; everything else is left exactly as written, so YAML flow mappings (`{app: phi-3}`)
and braces in prompts survive. `{{name}}` writes a literal `{name}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kaito_jupyter.errors import KaitoError

_FIELD = re.compile(r"\{\{([A-Za-z_]\w*(?:\.\w+)*)\}\}|\{([A-Za-z_]\w*(?:\.\w+)*)\}")


def interpolate(text: str, namespace: Mapping[str, Any]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1) is not None:  # {{name}}: escaped
            return "{" + match.group(1) + "}"
        dotted = match.group(2)
        root, *attrs = dotted.split(".")
        if root not in namespace:
            return match.group(0)
        value = namespace[root]
        for attr in attrs:
            try:
                value = getattr(value, attr)
            except AttributeError:
                raise KaitoError(
                    f"cannot interpolate {{{dotted}}}: {type(value).__name__} has no {attr!r}",
                    hint="write {{" + dotted + "}} for the literal text",
                ) from None
        return str(value)

    return _FIELD.sub(replace, text)
