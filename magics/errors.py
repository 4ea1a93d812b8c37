"""How a product error reads under a cell: a short block, never a traceback (unless --debug).

A validation error names each problem's line and field, and quotes that line of the cell's
YAML with a caret under the column, so the fix is one glance away.
"""

from __future__ import annotations

from kaito_jupyter.errors import Issue, KaitoError, ValidationError


def _quote(issue: Issue, sources: dict[str, str]) -> list[str]:
    text = sources.get(issue.source or "")
    if text is None or issue.line is None:
        return []
    lines = text.splitlines()
    if not 1 <= issue.line <= len(lines):
        return []
    out = [f"      {issue.line:>3} | {lines[issue.line - 1]}"]
    if issue.column is not None:
        out.append("      " + " " * 3 + " | " + " " * max(issue.column - 1, 0) + "^")
    return out


def _issue_line(issue: Issue, one_source: bool) -> str:
    where = ""
    if issue.line is not None:
        where = f"line {issue.line}: " if one_source else f"{issue.location()}: "
    elif issue.source and not one_source:
        where = f"{issue.source}: "
    sev = "" if issue.severity == "error" else f"{issue.severity}: "
    return f"  {where}{sev}{issue.path or '<document>'}: {issue.message}"


def error_text(exc: KaitoError, sources: dict[str, str] | None = None) -> str:
    """The block printed for `exc`. `sources` maps a source name ("<cell>") to its text."""
    sources = sources or {}
    if not isinstance(exc, ValidationError):
        return f"error: {exc}"
    issues = [*exc.issues, *exc.warnings]
    one_source = len({i.source for i in issues}) <= 1
    count = len(exc.issues)
    lines = [f"error: {count} problem{'s' if count != 1 else ''} found:"]
    for i, issue in enumerate(issues):
        lines.append(_issue_line(issue, one_source))
        following = issues[i + 1] if i + 1 < len(issues) else None
        # One quote under each run of problems on the same line.
        if following is None or (following.source, following.line) != (issue.source, issue.line):
            lines += _quote(issue, sources)
    return "\n".join(lines)
