import * as React from 'react';

import { KaitoClient } from '../api';
import { WorkspaceStore } from '../model';
import type {
  IBackendInfo,
  INodeInfo,
  IPresetInfo,
  ISkuInfo,
  IWorkspaceSummary
} from '../wire';
import { BackendBar } from './BackendBar';
import { NodeList } from './NodeList';
import { IDeployRequest, PresetCatalog } from './PresetCatalog';
import { IWorkspaceActions, WorkspaceList } from './WorkspaceList';

export interface ISidebarActions extends IWorkspaceActions {
  /** Tell the user something went wrong (a notification in JupyterLab). */
  error(message: string): void;
}

function useStore(store: WorkspaceStore): IWorkspaceSummary[] {
  const [items, setItems] = React.useState(store.list);
  React.useEffect(() => store.subscribe(() => setItems(store.list)), [store]);
  return items;
}

/**
 * The Kaito sidebar: backend, workspaces (live, from the store), GPU nodes and the preset
 * catalog. Nodes are re-read when a workspace changes (an event), never on a timer.
 */
export function Sidebar(props: {
  client: KaitoClient;
  store: WorkspaceStore;
  actions: ISidebarActions;
  onSwitched(): void;
}): JSX.Element {
  const { client, store, actions } = props;
  const items = useStore(store);
  const [info, setInfo] = React.useState<IBackendInfo | null>(null);
  const [nodes, setNodes] = React.useState<INodeInfo[]>([]);
  const [presets, setPresets] = React.useState<IPresetInfo[]>([]);
  const [skus, setSkus] = React.useState<ISkuInfo[]>([]);
  const [now, setNow] = React.useState(new Date());

  React.useEffect(() => {
    client.backend().then(setInfo, e => actions.error(e.message));
    client.presets().then(
      r => setPresets(r.items),
      e => actions.error(e.message)
    );
    client.skus().then(
      r => setSkus(r.items),
      e => actions.error(e.message)
    );
  }, [client]);

  // Nodes change with the workspaces placed on them: re-read them on each change.
  React.useEffect(() => {
    client.nodes().then(
      r => setNodes(r.items),
      () => setNodes([])
    );
    setNow(new Date());
  }, [client, items]);

  // The ages tick locally (no request).
  React.useEffect(() => {
    const timer = setInterval(() => setNow(new Date()), 30_000);
    return () => clearInterval(timer);
  }, []);

  const deploy = async (request: IDeployRequest) => {
    const { preset, ...options } = request;
    await client.deploy(preset, options);
  };

  const local = info?.backend === 'local';
  return (
    <div className="jp-Kaito-body">
      <BackendBar
        info={info}
        onSwitch={async backend => {
          setInfo(await client.use(backend));
          props.onSwitched();
        }}
      />
      <section className="jp-Kaito-section" data-section="workspaces">
        <h3>Workspaces</h3>
        <WorkspaceList items={items} actions={actions} now={now} />
      </section>
      <section className="jp-Kaito-section" data-section="nodes">
        <h3>{local ? 'This machine' : 'GPU nodes'}</h3>
        <NodeList items={nodes} />
      </section>
      <section className="jp-Kaito-section" data-section="presets">
        <h3>Presets</h3>
        {local ? (
          <p className="jp-Kaito-note">
            Showing the presets that run on this machine; search to see all.
          </p>
        ) : null}
        <PresetCatalog
          presets={presets}
          skus={skus}
          local={local}
          onDeploy={deploy}
        />
      </section>
    </div>
  );
}
