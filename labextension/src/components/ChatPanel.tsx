import * as React from 'react';

import { KaitoClient } from '../api';
import { chatTargets, WorkspaceStore } from '../model';
import type { IChatMessage } from '../wire';

/**
 * A chat with one workspace in the main area; the answer streams in as it is generated. The
 * picker lists only InferenceReady workspaces.
 */
export function ChatPanel(props: {
  client: KaitoClient;
  store: WorkspaceStore;
  initial?: string;
  maxTokens?: number;
  temperature?: number;
}): JSX.Element {
  const { client, store } = props;
  const [targets, setTargets] = React.useState(chatTargets(store.list));
  const [target, setTarget] = React.useState(
    props.initial ?? targets[0]?.name ?? ''
  );
  const [messages, setMessages] = React.useState<IChatMessage[]>([]);
  const [draft, setDraft] = React.useState('');
  const [streaming, setStreaming] = React.useState(false);
  const [error, setError] = React.useState('');

  React.useEffect(
    () =>
      store.subscribe(() => {
        const now = chatTargets(store.list);
        setTargets(now);
        setTarget(t => t || now[0]?.name || '');
      }),
    [store]
  );

  const send = async (event: React.FormEvent) => {
    event.preventDefault();
    if (!draft.trim() || !target) {
      return;
    }
    const history: IChatMessage[] = [
      ...messages,
      { role: 'user', content: draft }
    ];
    setMessages([...history, { role: 'assistant', content: '' }]);
    setDraft('');
    setError('');
    setStreaming(true);
    try {
      await client.chat(
        target,
        history,
        piece =>
          setMessages(current => {
            const last = current[current.length - 1];
            return [
              ...current.slice(0, -1),
              { role: 'assistant', content: last.content + piece }
            ];
          }),
        { maxTokens: props.maxTokens, temperature: props.temperature }
      );
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setStreaming(false);
    }
  };

  return (
    <div className="jp-Kaito-chat">
      <div className="jp-Kaito-chat-head">
        <label>
          Workspace
          <select
            aria-label="Workspace"
            value={target}
            onChange={e => setTarget(e.target.value)}
          >
            {targets.length === 0 ? (
              <option value="">no InferenceReady workspace</option>
            ) : null}
            {targets.map(t => (
              <option key={t.name} value={t.name}>
                {t.name}
              </option>
            ))}
          </select>
        </label>
      </div>
      <ol className="jp-Kaito-messages">
        {messages.map((m, i) => (
          <li
            key={i}
            className={`jp-Kaito-message jp-Kaito-${m.role}`}
            data-role={m.role}
          >
            {m.content}
          </li>
        ))}
      </ol>
      {error ? <p className="jp-Kaito-error">{error}</p> : null}
      <form className="jp-Kaito-chat-form" onSubmit={send}>
        <textarea
          aria-label="Message"
          value={draft}
          placeholder="Ask something"
          onChange={e => setDraft(e.target.value)}
          onKeyDown={e => {
            if (e.key === 'Enter' && !e.shiftKey) {
              send(e);
            }
          }}
        />
        <button
          className="jp-Kaito-button jp-mod-accept"
          type="submit"
          disabled={streaming || !target}
        >
          {streaming ? 'Answering…' : 'Send'}
        </button>
      </form>
    </div>
  );
}
