import * as React from 'react';

import { cost } from '../model';
import type { INodeInfo } from '../wire';

/** GPU nodes: instance type, GPU model and count, and which workspaces they run. */
export function NodeList(props: { items: INodeInfo[] }): JSX.Element {
  if (props.items.length === 0) {
    return <p className="jp-Kaito-empty">No GPU nodes.</p>;
  }
  return (
    <table className="jp-Kaito-nodes">
      <thead>
        <tr>
          <th>Node</th>
          <th>Instance</th>
          <th>GPUs</th>
          <th>Workspaces</th>
        </tr>
      </thead>
      <tbody>
        {props.items.map(n => (
          <tr key={n.name} data-node={n.name}>
            <td title={n.ready ? 'Ready' : 'Not ready'}>
              {n.ready ? '' : '⚠ '}
              {n.name}
            </td>
            <td>
              {n.instanceType ?? '—'}
              {n.pricePerHour !== null ? (
                <span className="jp-Kaito-cost"> {cost(n.pricePerHour)}</span>
              ) : null}
            </td>
            <td className="jp-Kaito-gpus">
              {n.gpus > 0
                ? `${n.gpusUsed}/${n.gpus} × ${n.gpuModel ?? 'GPU'}${
                    n.gpuMemoryGib ? ` ${n.gpuMemoryGib} GiB` : ''
                  }`
                : 'CPU only'}
            </td>
            <td>
              {n.workspaces.map(w => w.replace(/^default\//, '')).join(', ')}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
