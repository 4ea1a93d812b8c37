"""The verbs' arguments: one argparse parser per verb, raising instead of exiting.

argparse prints and calls `sys.exit` on a bad flag or `--help`; in a kernel that would be a
SystemExit traceback. Here a bad flag raises `UsageError` (a product error, shown as a short
message with the verb's usage) and `--help` raises `HelpShown` carrying the help text.
"""

from __future__ import annotations

import argparse

from kaito_jupyter.errors import KaitoError


class UsageError(KaitoError):
    """The magic's arguments do not parse: the message and the verb's usage line."""


class HelpShown(Exception):  # control flow, not an error
    """`--help` was asked for; `text` is what to show."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's hook for every parse failure
        raise UsageError(message, hint=self.format_usage().strip())

    def exit(self, status: int = 0, message: str | None = None):
        raise HelpShown(self.format_help())

    def print_help(self, file=None):
        raise HelpShown(self.format_help())


# One line per verb for `%kaito help`, in the order people meet them.
SUMMARY = {
    "apply": "create or update the Workspace(s) in the cell (Kaito's YAML, verbatim)",
    "deploy": "deploy a preset for inference: deploy PRESET [--instance-type T] [--adapter IMG[:S]]",
    "tune": "fine-tune a preset: tune PRESET --method qlora --input URL --output IMAGE|DIR",
    "get": "list workspaces (Kaito's README columns), or one: get [NAME] [-o wide|yaml|json]",
    "describe": "spec, conditions with reasons, events, nodes and endpoint of a workspace",
    "status": "a live status widget for a workspace (a progress widget for a tuning one)",
    "chat": "chat with a workspace: the cell is the prompt, tokens stream",
    "logs": "the runtime's log lines: logs NAME [-f] [--tail N]",
    "delete": "delete a workspace and what it created",
    "wake": "scale back up a workspace its idle timeout scaled to zero: wake NAME",
    "nodes": "GPU nodes: instance type, GPUs allocatable and used, workspaces on them",
    "presets": "the model presets (--tuning: only tunable ones)",
    "skus": "the GPU instance types (--cloud azure|aws)",
    "explain": "how a preset fits an instance type: explain PRESET --instance-type T",
    "validate": "check the cell's Workspace YAML like Kaito's admission webhook",
    "use": "point kernel, server and CLI at a backend: use local | kubernetes | aks ...",
    "help": "this list; `%kaito VERB --help` for a verb's flags",
}


def adapter_arg(text: str) -> tuple[str, float]:
    from kaito_jupyter.commands import adapter_spec

    return adapter_spec(text)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a timeout must be more than 0 seconds")
    return value


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _verb(parsers: dict[str, _Parser], name: str, usage_tail: str = "") -> _Parser:
    # argparse %-formats usage strings: the magic's own % is written %%.
    p = _Parser(prog=f"%kaito {name}", description=SUMMARY[name])
    if usage_tail:
        p.usage = "%(prog)s " + usage_tail.replace("%", "%%")
    parsers[name] = p
    return p


def _wait_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="show live progress until ready or failed")
    p.add_argument("--timeout", type=_seconds, help="stop waiting after this many seconds")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="admit and show what would be applied, change nothing",
    )


def parsers() -> dict[str, _Parser]:
    """One parser per verb (each with its own usage line in errors)."""
    sub: dict[str, _Parser] = {}

    p = _verb(sub, "apply", "[-f FILE] [--wait] [--timeout S] [--dry-run]  (YAML in the cell)")
    p.add_argument("-f", "--filename", action="append", help="a YAML file (instead of the cell)")
    _wait_flags(p)

    p = _verb(sub, "deploy")
    p.add_argument("preset", help="a preset name (`%%kaito presets` lists them)")
    p.add_argument("--name", help="the workspace's name (default workspace-PRESET)")
    p.add_argument("--instance-type", "-i", help="GPU VM size, e.g. Standard_NC6s_v3")
    p.add_argument("--count", type=_positive, help="number of nodes")
    p.add_argument(
        "--adapter",
        dest="adapters",
        action="append",
        type=adapter_arg,
        default=[],
        metavar="IMAGE_OR_DIR[:STRENGTH]",
        help="a LoRA adapter image or directory, strength 0..1 (repeatable)",
    )
    p.add_argument("--label", dest="labels", action="append", type=_label, default=[])
    _wait_flags(p)

    p = _verb(sub, "tune")
    p.add_argument("preset", help="a tuning preset (`%%kaito presets --tuning`)")
    p.add_argument("--method", choices=["qlora", "lora"], required=True)
    p.add_argument(
        "--input",
        dest="inputs",
        action="append",
        required=True,
        metavar="URL",
        help="dataset URL (repeatable), or one image or directory",
    )
    p.add_argument("--output", required=True, metavar="IMAGE|DIR", help="where the adapter goes")
    p.add_argument("--config", help="the ConfigMap holding training_config.yaml (Kaito's field)")
    p.add_argument("--name", help="the workspace's name (default tuning-PRESET)")
    p.add_argument("--instance-type", "-i")
    p.add_argument("--push-secret", help="the imagePushSecret for an image output")
    p.add_argument("--label", dest="labels", action="append", type=_label, default=[])
    _wait_flags(p)

    p = _verb(sub, "get")
    p.add_argument("name", nargs="?")
    p.add_argument("-o", "--output", choices=["wide", "yaml", "json"])

    p = _verb(sub, "describe")
    p.add_argument("name")

    p = _verb(sub, "status")
    p.add_argument("name")

    p = _verb(sub, "chat", "WORKSPACE [PROMPT ...] [--new] [--system TEXT] ...  (or the cell)")
    p.add_argument("name", metavar="WORKSPACE")
    p.add_argument("prompt", nargs="*", default=[], help="the prompt, when not in the cell")
    p.add_argument("--new", action="store_true", help="start a new conversation")
    p.add_argument("--system", help="the system prompt (starts a new conversation)")
    p.add_argument("--max-tokens", type=_positive)
    p.add_argument("--temperature", type=float)
    p.add_argument("--adapter", help="answer with one of the workspace's adapters, by name")
    p.add_argument("--ui", action="store_true", help="a chat widget instead of one answer")

    p = _verb(sub, "logs")
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("--tail", type=_positive, help="only the last N lines")

    p = _verb(sub, "delete")
    p.add_argument("name")
    p.add_argument("--wait", action="store_true", help="return once it is gone")
    p.add_argument("--timeout", type=_seconds, default=300.0)

    p = _verb(sub, "wake")
    p.add_argument("name")

    p = _verb(sub, "nodes")
    p.add_argument("--watch", action="store_true", help="a live nodes widget")

    p = _verb(sub, "presets")
    p.add_argument("--tuning", action="store_true", help="only presets that can be fine-tuned")
    p.add_argument("--all", action="store_true", help="include deprecated presets")

    p = _verb(sub, "skus")
    p.add_argument("--cloud", choices=["azure", "aws"])

    p = _verb(sub, "explain")
    p.add_argument("preset")
    p.add_argument("--instance-type", "-i", required=True)
    p.add_argument("--count", type=_positive, default=1)

    p = _verb(sub, "validate", "[-f FILE] [--old FILE] [-o text|json]  (YAML in the cell)")
    p.add_argument("-f", "--filename", action="append")
    p.add_argument("--old", help="the current version (a file), to check an update")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")

    p = _verb(sub, "use")
    p.add_argument("backend", choices=["local", "kubernetes", "aks"])
    p.add_argument("--context")
    p.add_argument("--namespace", "-n")
    p.add_argument("--kubeconfig")
    p.add_argument("--subscription")
    p.add_argument("--resource-group")
    p.add_argument("--cluster")

    p = _verb(sub, "help")
    p.add_argument("topic", nargs="?", help="a verb")
    return sub


def parse(argv: list[str]) -> argparse.Namespace:
    if not argv:
        argv = ["help"]
    if argv[0] not in SUMMARY:
        from kaito_jupyter.catalog import suggest

        close = suggest(argv[0], list(SUMMARY))
        raise UsageError(
            f"unknown verb {argv[0]!r}",
            hint=f"did you mean {close[0]}?" if close else "run `%kaito help`",
        )
    verb = parsers()[argv[0]]
    args, extra = verb.parse_known_args(argv[1:])
    # A chat prompt may follow the flags: `%kaito chat ws --new Hello there`.
    if argv[0] == "chat" and extra and not any(e.startswith("-") for e in extra):
        args.prompt += extra
    elif extra:
        verb.error(f"unrecognized arguments: {' '.join(extra)}")
    args.verb = argv[0]
    return args


def help_text(topic: str | None = None) -> str:
    if topic:
        if topic not in SUMMARY:
            raise UsageError(f"unknown verb {topic!r}", hint="run `%kaito help`")
        return parsers()[topic].format_help()
    width = max(map(len, SUMMARY))
    lines = [
        "usage: %kaito VERB [ARGS]   or   %%kaito VERB [ARGS] with YAML or a prompt in the cell",
        "",
        *(f"  {verb.ljust(width)}  {text}" for verb, text in SUMMARY.items()),
        "",
        "{var} in a cell is replaced by the Python variable var; --debug shows tracebacks.",
        "Results are objects: ws = %kaito get NAME",
    ]
    return "\n".join(lines)
