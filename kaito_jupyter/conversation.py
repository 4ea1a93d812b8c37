"""A chat conversation with one workspace: the system prompt and the turns so far.

Kept per workspace by the magics (`%%kaito chat NAME`) and by the chat widget, so each prompt
is sent with what came before. Pure: the command layer does the talking.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Conversation:
    workspace: str
    system: str | None = None
    turns: list[dict[str, str]] = field(default_factory=list)  # user/assistant messages

    def messages(self, prompt: str) -> list[dict[str, str]]:
        """What to send for `prompt`: the system prompt, the history, then the prompt."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, *self.turns, {"role": "user", "content": prompt}]

    def record(self, prompt: str, answer: str) -> None:
        """Keep a finished exchange (a failed one is not kept, so it can be retried)."""
        self.turns += [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": answer},
        ]

    def reset(self, system: str | None = None) -> None:
        self.turns = []
        self.system = system
