import * as React from 'react';

import { age, cells, cost } from '../model';
import type { IWorkspaceDetail, IWorkspaceSummary } from '../wire';
import { WorkspaceDetails } from './WorkspaceDetails';

export interface IWorkspaceActions {
  describe(name: string): Promise<IWorkspaceDetail>;
  openChat(name: string): void;
  openLogs(name: string): void;
  copySnippet(ws: IWorkspaceSummary): void;
  remove(name: string): void;
}

const SHORT: Record<string, string> = {
  ResourceReady: 'Resource',
  InferenceReady: 'Inference',
  JobStarted: 'Job',
  WorkspaceSucceeded: 'Succeeded'
};

/** One workspace: name, phase, condition cells (reason on hover), facts and actions. */
export function WorkspaceRow(props: {
  ws: IWorkspaceSummary;
  actions: IWorkspaceActions;
  now?: Date;
}): JSX.Element {
  const { ws, actions } = props;
  const [open, setOpen] = React.useState(false);
  const ready =
    ws.mode === 'inference' &&
    ws.conditions.some(c => c.type === 'InferenceReady' && c.status === 'True');
  return (
    <li
      className={`jp-Kaito-workspace jp-Kaito-phase-${ws.phase}`}
      data-name={ws.name}
      data-phase={ws.phase}
    >
      <div className="jp-Kaito-workspace-head">
        <span className="jp-Kaito-workspace-name">{ws.name}</span>
        <span className="jp-Kaito-badge" data-phase={ws.phase}>
          {ws.phase}
        </span>
      </div>
      <div className="jp-Kaito-cells">
        {cells(ws).map(c => (
          <span
            key={c.type}
            className={`jp-Kaito-cell jp-Kaito-cell-${c.state}`}
            data-condition={c.type}
            data-state={c.state}
            title={c.title}
          >
            {SHORT[c.type] ?? c.type}
          </span>
        ))}
      </div>
      <dl className="jp-Kaito-facts">
        <dt>Preset</dt>
        <dd>{ws.preset ?? '—'}</dd>
        <dt>Instance</dt>
        <dd>
          {ws.instanceType ?? 'this machine'}
          {ws.nodeCount > 1 ? ` × ${ws.nodeCount}` : ''}
        </dd>
        <dt>Age</dt>
        <dd className="jp-Kaito-age">{age(ws.created, props.now)}</dd>
        {ws.endpoint ? (
          <>
            <dt>Endpoint</dt>
            <dd className="jp-Kaito-endpoint">{ws.endpoint}</dd>
          </>
        ) : null}
        {ws.costPerHour !== null ? (
          <>
            <dt>Cost</dt>
            <dd className="jp-Kaito-cost">{cost(ws.costPerHour)}</dd>
          </>
        ) : null}
      </dl>
      <div className="jp-Kaito-actions">
        <button
          className="jp-Kaito-button"
          disabled={!ready}
          title={ready ? 'Chat with it' : 'Chat needs InferenceReady'}
          onClick={() => actions.openChat(ws.name)}
        >
          Chat
        </button>
        <button
          className="jp-Kaito-button"
          onClick={() => actions.openLogs(ws.name)}
        >
          Logs
        </button>
        {ws.snippet ? (
          <button
            className="jp-Kaito-button"
            title="Copy a %%kaito cell that chats with it"
            onClick={() => actions.copySnippet(ws)}
          >
            Copy %%kaito
          </button>
        ) : null}
        <button className="jp-Kaito-button" onClick={() => setOpen(!open)}>
          {open ? 'Hide details' : 'Details'}
        </button>
        <button
          className="jp-Kaito-button jp-mod-warn"
          disabled={ws.phase === 'deleting'}
          onClick={() => actions.remove(ws.name)}
        >
          Delete
        </button>
      </div>
      {open ? (
        <WorkspaceDetails
          name={ws.name}
          version={ws.resourceVersion}
          load={actions.describe}
        />
      ) : null}
    </li>
  );
}

export function WorkspaceList(props: {
  items: IWorkspaceSummary[];
  actions: IWorkspaceActions;
  now?: Date;
}): JSX.Element {
  if (props.items.length === 0) {
    return (
      <p className="jp-Kaito-empty">
        No workspaces. Deploy a preset below, or apply one from a notebook with
        %%kaito apply.
      </p>
    );
  }
  return (
    <ul className="jp-Kaito-workspaces">
      {props.items.map(ws => (
        <WorkspaceRow
          key={`${ws.namespace}/${ws.name}`}
          ws={ws}
          actions={props.actions}
          now={props.now}
        />
      ))}
    </ul>
  );
}
