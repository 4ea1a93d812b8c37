import {
  age,
  cell,
  cells,
  chatTargets,
  cost,
  fittingSkus,
  searchPresets,
  WorkspaceStore
} from '../src/model';
import { condition, preset, ready, SKUS, workspace } from './fixtures';

describe('condition cells', () => {
  it('marks True ready and keeps the reason for the hover text', () => {
    const c = cell(ready('a'), 'InferenceReady');
    expect(c.state).toBe('ready');
    expect(c.title).toBe('InferenceReady: True');
  });

  it('marks a failure failed, with reason and message on hover', () => {
    const ws = workspace('a', {
      phase: 'failed',
      conditions: [
        condition(
          'ResourceReady',
          'False',
          'QuotaExceeded',
          'no NC A100 v4 quota'
        )
      ]
    });
    const c = cell(ws, 'ResourceReady');
    expect(c.state).toBe('failed');
    expect(c.title).toBe(
      'ResourceReady: False (QuotaExceeded: no NC A100 v4 quota)'
    );
  });

  it('shows progress while waiting or unreported', () => {
    const ws = workspace('a', {
      conditions: [
        condition(
          'ResourceReady',
          'False',
          'NodesProvisioning',
          'creating agent pool'
        )
      ]
    });
    expect(cell(ws, 'ResourceReady').state).toBe('progressing');
    expect(cell(ws, 'InferenceReady')).toEqual({
      type: 'InferenceReady',
      state: 'progressing',
      title: 'InferenceReady: not reported yet'
    });
  });

  it('uses the tuning columns for a tuning workspace', () => {
    expect(cells(workspace('t', { mode: 'tuning' })).map(c => c.type)).toEqual([
      'ResourceReady',
      'JobStarted',
      'WorkspaceSucceeded'
    ]);
  });
});

describe('formatting', () => {
  it('gives Kubernetes-style ages', () => {
    const now = new Date('2026-12-03T12:00:00Z');
    expect(age('2026-12-03T11:59:15Z', now)).toBe('45s');
    expect(age('2026-12-03T11:50:00Z', now)).toBe('10m');
    expect(age('2026-12-03T07:00:00Z', now)).toBe('5h');
    expect(age('2026-11-30T12:00:00Z', now)).toBe('3d');
    expect(age(null, now)).toBe('');
    expect(age('garbage', now)).toBe('');
  });

  it('prints a known cost and nothing for an unknown one', () => {
    expect(cost(3.673)).toBe('$3.67/h');
    expect(cost(null)).toBe('');
  });
});

describe('chat targets and fitting SKUs', () => {
  it('lists only InferenceReady inference workspaces', () => {
    const items = [
      ready('good'),
      workspace('pending'),
      ready('tuning', { mode: 'tuning' }),
      ready('going', { phase: 'deleting' })
    ];
    expect(chatTargets(items).map(w => w.name)).toEqual(['good']);
  });

  it('offers only the instance types that fit, in the server order', () => {
    const p = preset('llama-3.1-8b-instruct', [
      'Standard_NC24ads_A100_v4',
      'Unknown_SKU'
    ]);
    expect(fittingSkus(p, SKUS).map(s => s.name)).toEqual([
      'Standard_NC24ads_A100_v4'
    ]);
  });

  it('searches names and families', () => {
    const items = [preset('phi-4', []), preset('llama-3.1-8b-instruct', [])];
    expect(searchPresets(items, 'LLAMA').map(p => p.name)).toEqual([
      'llama-3.1-8b-instruct'
    ]);
    expect(searchPresets(items, ' ')).toHaveLength(2);
  });
});

describe('WorkspaceStore', () => {
  it('follows pushed events and ignores stale ones', () => {
    const store = new WorkspaceStore();
    const seen: string[][] = [];
    store.subscribe(() =>
      seen.push(store.list.map(w => `${w.name}:${w.phase}`))
    );
    store.reset([workspace('b', { resourceVersion: '3' })]);
    store.applyChange({
      type: 'ADDED',
      name: 'a',
      namespace: 'default',
      workspace: workspace('a')
    });
    store.applyChange({
      type: 'MODIFIED',
      name: 'b',
      namespace: 'default',
      workspace: ready('b', { resourceVersion: '5' })
    });
    // An older version arriving late (the initial list raced the watch) changes nothing.
    store.applyChange({
      type: 'MODIFIED',
      name: 'b',
      namespace: 'default',
      workspace: workspace('b', { resourceVersion: '4' })
    });
    store.applyChange({
      type: 'DELETED',
      name: 'a',
      namespace: 'default',
      workspace: null
    });
    store.applyChange({
      type: 'DELETED',
      name: 'zzz',
      namespace: 'default',
      workspace: null
    });
    expect(seen).toEqual([
      ['b:pending'],
      ['a:pending', 'b:pending'],
      ['a:pending', 'b:ready'],
      ['b:ready']
    ]);
  });
});
