"""Chat with a workspace in a widget: a prompt box, the answer streaming in, the history, and
a picker for the workspace's adapters (the base model, or one adapter by name)."""

from __future__ import annotations

import threading

import ipywidgets as w

from kaito_jupyter.backends.base import Backend
from kaito_jupyter.conversation import Conversation
from kaito_jupyter.errors import KaitoError
from kaito_jupyter.widgets.state import ChatState

BASE = "(base model)"


def adapter_names(stored) -> list[str]:
    """The names a chat request can ask for: the workspace's adapters."""
    ws = stored.workspace
    adapters = (ws.inference.adapters if ws.inference else None) or []
    return [a.source.name for a in adapters if a.source is not None and a.source.name]


class ChatWidget(w.VBox):
    def __init__(
        self,
        name: str,
        backend: Backend | None = None,
        conversation: Conversation | None = None,
        adapters: list[str] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ):
        super().__init__()
        self.name = name
        self.backend = backend
        self.conversation = conversation or Conversation(name)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.transcript = w.HTML()
        self.prompt = w.Textarea(placeholder=f"Ask {name}…", layout=w.Layout(width="100%"))
        self.send_button = w.Button(description="Send", button_style="primary")
        self.new_button = w.Button(description="New conversation")
        self.adapter = w.Dropdown(options=[BASE, *(adapters or [])], description="adapter")
        self.children = (
            self.transcript,
            self.prompt,
            w.HBox([self.send_button, self.new_button, self.adapter]),
        )
        self.state = ChatState(name, [(m["role"], m["content"]) for m in self.conversation.turns])
        self.busy = threading.Event()
        self.send_button.on_click(lambda _b: self.send(self.prompt.value))
        self.new_button.on_click(lambda _b: self.new())
        self._render()

    def new(self) -> None:
        self.conversation.reset(self.conversation.system)
        self.state = ChatState(self.name)
        self._render()

    def send(self, prompt: str, *, wait: bool = False) -> threading.Thread | None:
        """Send `prompt`; the answer streams into the transcript from a background thread."""
        prompt = prompt.strip()
        if not prompt or self.busy.is_set():
            return None
        self.busy.set()
        self.prompt.value = ""
        self.send_button.disabled = True
        self.state.turns.append(("user", prompt))
        self.state.streaming = ""
        self.state.error = ""
        self._render()
        thread = threading.Thread(target=self._answer, args=(prompt,), daemon=True)
        thread.start()
        if wait:
            thread.join()
        return thread

    def _answer(self, prompt: str) -> None:
        from kaito_jupyter import commands

        adapter = None if self.adapter.value == BASE else self.adapter.value
        try:
            pieces = commands.chat(
                self.name,
                self.conversation.messages(prompt),
                backend=self.backend,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                adapter=adapter,
            )
            for piece in pieces:
                self.state.streaming = (self.state.streaming or "") + piece
                self._render()
            answer = self.state.streaming or ""
            self.conversation.record(prompt, answer)
            self.state.turns.append(("assistant", answer))
        except KaitoError as exc:
            self.state.turns.pop()  # the failed prompt is not history; it can be sent again
            self.state.error = exc.message
            self.prompt.value = prompt
        except Exception as exc:  # shown, not raised into a later cell
            self.state.turns.pop()
            self.state.error = f"{type(exc).__name__}: {exc}"
            self.prompt.value = prompt
        finally:
            self.state.streaming = None
            self.send_button.disabled = False
            self.busy.clear()
            self._render()

    def _render(self) -> None:
        self.transcript.value = self.state.html()

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self.state.text()
        bundle["text/html"] = self.state.html()
        return bundle
