"""Dataset files to conversations: parquet, csv, json and jsonl rows, in either shape Kaito accepts.

- OpenAI chat rows: a `messages` column (or DatasetConfig.messages_column) holding
  [{"role": ..., "content": ...}, ...], like philschmid/dolly-15k-oai-style;
- prompt/response rows: a prompt column (prompt, instruction, question, input; or
  DatasetConfig.prompt_column), an optional context column, and a response column (response,
  completion, output, answer; or DatasetConfig.response_column). TRL's conversational
  prompt/completion rows (lists of messages in both) are read too.

Every conversation must end its useful part with an assistant turn: the loss is taken on
assistant tokens, and a conversation without one teaches nothing. Pure: no torch.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from kaito_jupyter.errors import RuntimeFailure

from .config import Dataset

Message = dict[str, str]
Conversation = list[Message]

PROMPT_COLUMNS = ("prompt", "instruction", "question", "input", "query")
RESPONSE_COLUMNS = ("response", "completion", "output", "answer", "chosen")
CONTEXT_COLUMNS = ("context",)
ROLES = ("system", "user", "assistant", "tool", "developer")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of one data file, by extension (content-sniffed when the name does not say)."""
    name = path.name.lower()
    try:
        if name.endswith(".parquet") or _starts_with(path, b"PAR1"):
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if name.endswith(".csv"):
            with open(path, newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))
        return _read_json(path)
    except RuntimeFailure:
        raise
    except Exception as exc:  # pyarrow, csv and json each raise their own types
        raise RuntimeFailure(
            f"cannot read {path.name} as {_kind(name)}: {exc}",
            reason="InvalidDatasetFormat",
            hint="inputs must be parquet, csv, json (a list of objects) or jsonl files",
        ) from exc


def _kind(name: str) -> str:
    for ext in (".parquet", ".csv", ".jsonl", ".json"):
        if name.endswith(ext):
            return ext[1:]
    return "json"


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(magic)) == magic


_CONTAINERS = ("data", "rows", "train", "examples", "records")


def _read_json(path: Path) -> list[dict[str, Any]]:
    """A .json file holds a list of rows (or {"data": [...]}); a .jsonl file one row a line.
    A .json file that does not parse whole is read as JSON lines, as it often is one."""
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return []
    if not path.name.lower().endswith(".jsonl"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, list):
            return doc
        if isinstance(doc, dict):
            for key in _CONTAINERS:
                if isinstance(doc.get(key), list):
                    return doc[key]
            return [doc]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RuntimeFailure(
                    f"{path.name} line {number} is not JSON: {exc}", reason="InvalidDatasetFormat"
                ) from exc
    return rows


def _text(value: Any) -> str:
    """Message content as text: a string, or OpenAI's list of content parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in value)
    return str(value)


def _messages(value: Any, where: str) -> Conversation:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RuntimeFailure(
                f"{where}: messages is a string that is not JSON", reason="InvalidDatasetColumns"
            ) from exc
    if not isinstance(value, list) or not value:
        raise RuntimeFailure(
            f"{where}: messages must be a non-empty list", reason="InvalidDatasetColumns"
        )
    out = []
    for message in value:
        if not isinstance(message, dict) or "role" not in message:
            raise RuntimeFailure(
                f"{where}: each message needs a role and content, got {str(message)[:80]!r}",
                reason="InvalidDatasetColumns",
            )
        out.append({"role": str(message["role"]), "content": _text(message.get("content"))})
    return out


def _pick(columns: set[str], explicit: str | None, candidates: tuple[str, ...]) -> str | None:
    if explicit:
        return explicit if explicit in columns else None
    return next((c for c in candidates if c in columns), None)


def conversations(rows: list[dict[str, Any]], settings: Dataset, source: str) -> list[Conversation]:
    """Rows to conversations, with the failure reasons the controller shows for bad data."""
    if not rows:
        raise RuntimeFailure(f"{source} has no rows", reason="EmptyDataset")
    columns = set().union(*(r.keys() for r in rows if isinstance(r, dict)))
    messages_col = _pick(columns, settings.messages_column, ("messages", "conversations"))
    prompt_col = _pick(columns, settings.prompt_column, PROMPT_COLUMNS)
    response_col = _pick(columns, settings.response_column, RESPONSE_COLUMNS)
    context_col = _pick(columns, settings.context_column, CONTEXT_COLUMNS)
    if messages_col is None and not (prompt_col and response_col):
        wanted = (
            f"a messages column ({settings.messages_column or 'messages'}) or a prompt column "
            f"({settings.prompt_column or '/'.join(PROMPT_COLUMNS)}) with a response column "
            f"({settings.response_column or '/'.join(RESPONSE_COLUMNS)})"
        )
        raise RuntimeFailure(
            f"{source} has columns {sorted(columns)}; expected {wanted}",
            reason="InvalidDatasetColumns",
            hint="set DatasetConfig.messages_column, prompt_column or response_column to name yours",
        )
    out: list[Conversation] = []
    for index, row in enumerate(rows):
        where = f"{source} row {index}"
        if messages_col is not None:
            conversation = _messages(row.get(messages_col), where)
        else:
            prompt = row.get(prompt_col)
            response = row.get(response_col)
            if isinstance(prompt, list):  # TRL conversational prompt/completion
                conversation = _messages(prompt, where) + _messages(response, where)
            else:
                text = _text(prompt)
                context = _text(row.get(context_col)) if context_col else ""
                if context:
                    text = f"{text}\n\n{context}" if text else context
                conversation = [
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": _text(response)},
                ]
        unknown = [m["role"] for m in conversation if m["role"] not in ROLES]
        if unknown:
            raise RuntimeFailure(
                f"{where}: unknown role {unknown[0]!r}; roles are {', '.join(ROLES)}",
                reason="InvalidDatasetColumns",
            )
        answered = [m for m in conversation if m["role"] == "assistant" and m["content"].strip()]
        if not answered:
            raise RuntimeFailure(
                f"{where} has no assistant turn with content: the loss is taken on assistant "
                "replies, so every conversation needs one",
                reason="NoAssistantTurn",
                hint="add the assistant's reply to each conversation, or drop those rows",
            )
        out.append(conversation)
    return out


def load(files: list[Path], settings: Dataset) -> list[Conversation]:
    """Every conversation in the data files, in order."""
    if not files:
        raise RuntimeFailure("no data files were given", reason="EmptyDataset")
    out: list[Conversation] = []
    for path in files:
        rows = read_rows(path)
        if rows:
            out.extend(conversations(rows, settings, path.name))
        if settings.max_rows and len(out) >= settings.max_rows:
            return out[: settings.max_rows]
    if not out:
        names = ", ".join(p.name for p in files)
        raise RuntimeFailure(f"the dataset ({names}) has no rows", reason="EmptyDataset")
    return out
