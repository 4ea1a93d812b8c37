import * as React from 'react';

import type { IWorkspaceDetail } from '../wire';

/**
 * Everything about one workspace: each condition with its reason and message, the worker
 * nodes, the events and the YAML as stored. Re-read when the workspace changes (its
 * resourceVersion moves with each pushed event), not on a timer.
 */
export function WorkspaceDetails(props: {
  name: string;
  version: string;
  load(name: string): Promise<IWorkspaceDetail>;
}): JSX.Element {
  const [detail, setDetail] = React.useState<IWorkspaceDetail | null>(null);
  const [error, setError] = React.useState('');
  React.useEffect(() => {
    let live = true;
    props.load(props.name).then(
      d => live && setDetail(d),
      e => live && setError((e as Error).message)
    );
    return () => {
      live = false;
    };
  }, [props.name, props.version]);
  if (error) {
    return <p className="jp-Kaito-error">{error}</p>;
  }
  if (!detail) {
    return <p className="jp-Kaito-note">loading…</p>;
  }
  const { summary } = detail;
  return (
    <div className="jp-Kaito-details">
      <table className="jp-Kaito-conditions">
        <tbody>
          {summary.conditions.map(c => (
            <tr key={c.type} data-condition={c.type}>
              <td>{c.type}</td>
              <td>{c.status}</td>
              <td>{[c.reason, c.message].filter(Boolean).join(': ')}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {summary.workerNodes.length > 0 ? (
        <p className="jp-Kaito-note">
          Worker nodes: {summary.workerNodes.join(', ')}
        </p>
      ) : null}
      {detail.events.length > 0 ? (
        <ul className="jp-Kaito-events">
          {detail.events.map((e, i) => (
            <li key={i} data-type={e.type}>
              <b>{e.reason}</b> {e.message}
              {e.count > 1 ? ` (×${e.count})` : ''}
            </li>
          ))}
        </ul>
      ) : null}
      <pre className="jp-Kaito-yaml">{detail.yaml}</pre>
    </div>
  );
}
