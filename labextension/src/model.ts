import type {
  IPresetInfo,
  ISkuInfo,
  IWorkspaceChanged,
  IWorkspaceSummary
} from './wire';

/** The schema id of the server's pushed workspace events (kaito_jupyter/server/app.py). */
export const WORKSPACE_EVENT =
  'https://kaito.sh/kaito-jupyter/events/workspace';

/** The condition columns the sidebar shows, as Kaito's printer columns name them. */
export const INFERENCE_COLUMNS = [
  'ResourceReady',
  'InferenceReady',
  'WorkspaceSucceeded'
];
export const TUNING_COLUMNS = [
  'ResourceReady',
  'JobStarted',
  'WorkspaceSucceeded'
];

export type CellState = 'ready' | 'progressing' | 'failed';

/** One condition cell: its state, and the text shown on hover. */
export interface ICell {
  type: string;
  state: CellState;
  title: string;
}

/**
 * A condition as a cell: True is ready; False with a failure reason is failed; anything else
 * (absent, Unknown, False while waiting) is progressing.
 */
export function cell(ws: IWorkspaceSummary, type: string): ICell {
  const cond = ws.conditions.find(c => c.type === type);
  if (!cond) {
    return { type, state: 'progressing', title: `${type}: not reported yet` };
  }
  const why = [cond.reason, cond.message].filter(Boolean).join(': ');
  const title = `${type}: ${cond.status}${why ? ` (${why})` : ''}`;
  if (cond.status === 'True') {
    return { type, state: 'ready', title };
  }
  const failed =
    cond.status === 'False' &&
    (ws.phase === 'failed' ||
      /fail|error|quota|invalid/i.test(cond.reason ?? ''));
  return { type, state: failed ? 'failed' : 'progressing', title };
}

export function cells(ws: IWorkspaceSummary): ICell[] {
  const columns = ws.mode === 'tuning' ? TUNING_COLUMNS : INFERENCE_COLUMNS;
  return columns.map(type => cell(ws, type));
}

/** Kubernetes-style age: 45s, 7m, 3h, 2d. */
export function age(created: string | null, now: Date = new Date()): string {
  if (!created) {
    return '';
  }
  const then = Date.parse(created);
  if (Number.isNaN(then)) {
    return '';
  }
  const seconds = Math.max(0, Math.floor((now.getTime() - then) / 1000));
  if (seconds < 120) {
    return `${seconds}s`;
  }
  if (seconds < 3 * 3600) {
    return `${Math.floor(seconds / 60)}m`;
  }
  if (seconds < 2 * 86400) {
    return `${Math.floor(seconds / 3600)}h`;
  }
  return `${Math.floor(seconds / 86400)}d`;
}

/** "$3.67/h", or '' when the price is not known. */
export function cost(perHour: number | null | undefined): string {
  return perHour === null || perHour === undefined
    ? ''
    : `$${perHour.toFixed(2)}/h`;
}

/** The workspaces a chat can talk to: inference ones whose InferenceReady is True. */
export function chatTargets(items: IWorkspaceSummary[]): IWorkspaceSummary[] {
  return items.filter(
    ws =>
      ws.mode === 'inference' &&
      ws.phase !== 'deleting' &&
      ws.conditions.some(
        c => c.type === 'InferenceReady' && c.status === 'True'
      )
  );
}

/**
 * The instance types the Deploy form offers for a preset: only those that fit it (the server
 * computes the fit), in the server's order, with their table rows.
 */
export function fittingSkus(preset: IPresetInfo, skus: ISkuInfo[]): ISkuInfo[] {
  const byName = new Map(skus.map(s => [s.name, s]));
  return preset.fits
    .map(name => byName.get(name))
    .filter((s): s is ISkuInfo => s !== undefined);
}

/** Presets whose name or family contains the search text. */
export function searchPresets(
  items: IPresetInfo[],
  text: string
): IPresetInfo[] {
  const needle = text.trim().toLowerCase();
  return needle
    ? items.filter(
        p =>
          p.name.toLowerCase().includes(needle) ||
          p.family.toLowerCase().includes(needle)
      )
    : items;
}

function key(ws: { name: string; namespace: string }): string {
  return `${ws.namespace}/${ws.name}`;
}

/**
 * The workspaces the sidebar shows: a list fetched once, then kept current by the pushed
 * events. Listeners are told after every change.
 */
export class WorkspaceStore {
  private items = new Map<string, IWorkspaceSummary>();
  private listeners = new Set<() => void>();

  get list(): IWorkspaceSummary[] {
    return [...this.items.values()].sort((a, b) =>
      key(a).localeCompare(key(b))
    );
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Replace everything (the initial list, or after switching backend). */
  reset(items: IWorkspaceSummary[]): void {
    this.items = new Map(items.map(ws => [key(ws), ws]));
    this.notify();
  }

  /** Apply one pushed event; an older resourceVersion never overwrites a newer one. */
  applyChange(event: IWorkspaceChanged): void {
    const k = key(event);
    if (event.type === 'DELETED' || !event.workspace) {
      if (this.items.delete(k)) {
        this.notify();
      }
      return;
    }
    const old = this.items.get(k);
    if (old && isOlder(event.workspace.resourceVersion, old.resourceVersion)) {
      return;
    }
    this.items.set(k, event.workspace);
    this.notify();
  }

  private notify(): void {
    this.listeners.forEach(l => l());
  }
}

function isOlder(candidate: string, current: string): boolean {
  // Kubernetes says resourceVersions are opaque; both backends give integers, compared as
  // such. Anything else is taken as newer.
  const a = Number(candidate);
  const b = Number(current);
  return Number.isInteger(a) && Number.isInteger(b) && a < b;
}
