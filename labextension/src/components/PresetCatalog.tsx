import * as React from 'react';

import { cost, fittingSkus, searchPresets } from '../model';
import type { IPresetInfo, ISkuInfo } from '../wire';

export interface IDeployRequest {
  preset: string;
  name?: string;
  instanceType?: string;
  count?: number;
}

/**
 * The Deploy form of one preset. The instance-type picker lists only the SKUs that fit; on
 * the local backend "this machine" comes first (instanceType is optional there).
 */
export function DeployForm(props: {
  preset: IPresetInfo;
  skus: ISkuInfo[];
  local: boolean;
  onDeploy(request: IDeployRequest): Promise<void>;
  onCancel(): void;
}): JSX.Element {
  const { preset } = props;
  const fits = fittingSkus(preset, props.skus);
  const [name, setName] = React.useState(`workspace-${preset.name}`);
  const [instanceType, setInstanceType] = React.useState(
    props.local ? '' : (fits[0]?.name ?? '')
  );
  const [count, setCount] = React.useState(1);
  const [busy, setBusy] = React.useState(false);
  const [error, setError] = React.useState('');
  const submit = async (event: React.FormEvent) => {
    event.preventDefault();
    setBusy(true);
    setError('');
    try {
      await props.onDeploy({
        preset: preset.name,
        name: name || undefined,
        instanceType: instanceType || undefined,
        count: instanceType && count > 1 ? count : undefined
      });
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="jp-Kaito-deploy" onSubmit={submit}>
      <label>
        Name
        <input
          name="name"
          value={name}
          onChange={e => setName(e.target.value)}
          pattern="[a-z0-9]([-a-z0-9]*[a-z0-9])?"
          maxLength={63}
        />
      </label>
      <label>
        Instance type
        <select
          name="instanceType"
          value={instanceType}
          onChange={e => setInstanceType(e.target.value)}
        >
          {props.local ? <option value="">this machine</option> : null}
          {fits.map(s => (
            <option key={s.name} value={s.name}>
              {s.name} ({s.gpus} × {s.gpuModel} {s.gpuMemoryGib} GiB
              {s.pricePerHour !== null ? `, ${cost(s.pricePerHour)}` : ''})
            </option>
          ))}
        </select>
      </label>
      {instanceType ? (
        <label>
          Nodes
          <input
            name="count"
            type="number"
            min={1}
            max={64}
            value={count}
            onChange={e => setCount(Number(e.target.value))}
          />
        </label>
      ) : null}
      {error ? <p className="jp-Kaito-error">{error}</p> : null}
      <div className="jp-Kaito-actions">
        <button
          className="jp-Kaito-button jp-mod-accept"
          type="submit"
          disabled={busy}
        >
          {busy ? 'Deploying…' : 'Deploy'}
        </button>
        <button
          className="jp-Kaito-button"
          type="button"
          onClick={props.onCancel}
        >
          Cancel
        </button>
      </div>
    </form>
  );
}

/** The preset catalog: search, one row a preset, a Deploy form under the chosen one. */
export function PresetCatalog(props: {
  presets: IPresetInfo[];
  skus: ISkuInfo[];
  local: boolean;
  onDeploy(request: IDeployRequest): Promise<void>;
}): JSX.Element {
  const [search, setSearch] = React.useState('');
  const [open, setOpen] = React.useState<string | null>(null);
  const shown = searchPresets(props.presets, search).filter(
    p => !props.local || p.cpu || open === p.name || search
  );
  return (
    <div className="jp-Kaito-presets">
      <input
        className="jp-Kaito-search"
        placeholder="Search presets"
        value={search}
        onChange={e => setSearch(e.target.value)}
      />
      <ul>
        {shown.map(p => (
          <li key={p.name} data-preset={p.name}>
            <div className="jp-Kaito-preset-head">
              <div className="jp-Kaito-preset-text">
                <div className="jp-Kaito-preset-name">{p.name}</div>
                <div className="jp-Kaito-preset-facts">
                  {p.paramsB}B · {p.gpuMemoryGib} GiB GPU memory
                  {p.cpu ? ' · runs on CPU' : ''}
                  {p.tuning ? ' · tunable' : ''}
                </div>
              </div>
              {open !== p.name ? (
                <button
                  className="jp-Kaito-button"
                  onClick={() => setOpen(p.name)}
                >
                  Deploy…
                </button>
              ) : null}
            </div>
            {open === p.name ? (
              <DeployForm
                preset={p}
                skus={props.skus}
                local={props.local}
                onDeploy={async r => {
                  await props.onDeploy(r);
                  setOpen(null);
                }}
                onCancel={() => setOpen(null)}
              />
            ) : null}
          </li>
        ))}
      </ul>
    </div>
  );
}
