import * as React from 'react';

import { cost } from '../model';
import type { INodeInfo } from '../wire';

/** GPU nodes: instance type, GPU model and count, and which workspaces they run. */
export function NodeList(props: { items: INodeInfo[] }): JSX.Element {
  if (props.items.length === 0) {
    return <p className="jp-Kaito-empty">No GPU nodes.</p>;
  }
  return (
    <ul className="jp-Kaito-nodes">
      {props.items.map(n => (
        <li key={n.name} data-node={n.name} className="jp-Kaito-node">
          <div className="jp-Kaito-node-head">
            <span
              className="jp-Kaito-node-name"
              title={n.ready ? 'Ready' : 'Not ready'}
            >
              {n.ready ? '' : '⚠ '}
              {n.name}
            </span>
            {n.pricePerHour !== null ? (
              <span className="jp-Kaito-cost">{cost(n.pricePerHour)}</span>
            ) : null}
          </div>
          <div className="jp-Kaito-node-facts">
            {n.instanceType ? `${n.instanceType} · ` : ''}
            <span className="jp-Kaito-gpus">
              {n.gpus > 0
                ? `${n.gpusUsed}/${n.gpus} × ${n.gpuModel ?? 'GPU'}${
                    n.gpuMemoryGib ? ` ${n.gpuMemoryGib} GiB` : ''
                  }`
                : 'CPU only'}
            </span>
          </div>
          {n.workspaces.length > 0 ? (
            <div className="jp-Kaito-node-workspaces">
              runs{' '}
              {n.workspaces.map(w => w.replace(/^default\//, '')).join(', ')}
            </div>
          ) : null}
        </li>
      ))}
    </ul>
  );
}
