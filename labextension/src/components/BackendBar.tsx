import * as React from 'react';

import type { IBackendInfo } from '../wire';

/** Where the server points (backend, context, namespace), and a switcher. */
export function BackendBar(props: {
  info: IBackendInfo | null;
  onSwitch(backend: 'local' | 'kubernetes'): Promise<void>;
}): JSX.Element {
  const { info } = props;
  const [error, setError] = React.useState('');
  if (!info) {
    return <div className="jp-Kaito-backend">connecting…</div>;
  }
  return (
    <div className="jp-Kaito-backend" title={info.controller ?? ''}>
      <select
        className="jp-Kaito-backend-select"
        aria-label="Backend"
        value={info.backend}
        onChange={async e => {
          setError('');
          try {
            await props.onSwitch(e.target.value as 'local' | 'kubernetes');
          } catch (err) {
            setError((err as Error).message);
          }
        }}
      >
        {info.choices.map(c => (
          <option key={c} value={c}>
            {c}
          </option>
        ))}
      </select>
      <span className="jp-Kaito-target">{info.target}</span>
      {error ? <p className="jp-Kaito-error">{error}</p> : null}
    </div>
  );
}
