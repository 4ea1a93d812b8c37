import * as React from 'react';

import { KaitoClient } from '../api';

/** A workspace's logs, followed: lines arrive as the runtime writes them. */
export function LogsPanel(props: {
  client: KaitoClient;
  name: string;
}): JSX.Element {
  const [lines, setLines] = React.useState<string[]>([]);
  const [error, setError] = React.useState('');
  React.useEffect(() => {
    const abort = new AbortController();
    props.client
      .logs(
        props.name,
        line => setLines(current => [...current.slice(-4999), line]),
        {
          follow: true,
          tail: 500,
          signal: abort.signal
        }
      )
      .catch(e => {
        if (!abort.signal.aborted) {
          setError((e as Error).message);
        }
      });
    return () => abort.abort();
  }, [props.client, props.name]);
  return (
    <div className="jp-Kaito-logs">
      {error ? <p className="jp-Kaito-error">{error}</p> : null}
      <pre>{lines.join('\n')}</pre>
    </div>
  );
}
