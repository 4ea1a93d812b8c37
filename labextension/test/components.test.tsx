import * as React from 'react';
import { act } from 'react';
import { createRoot, Root } from 'react-dom/client';

import { KaitoClient } from '../src/api';
import { ChatPanel } from '../src/components/ChatPanel';
import { NodeList } from '../src/components/NodeList';
import { DeployForm } from '../src/components/PresetCatalog';
import {
  IWorkspaceActions,
  WorkspaceRow
} from '../src/components/WorkspaceList';
import { WorkspaceStore } from '../src/model';
import { condition, preset, ready, SKUS, workspace } from './fixtures';

(globalThis as any).IS_REACT_ACT_ENVIRONMENT = true;

let container: HTMLDivElement;
let root: Root;

beforeEach(() => {
  container = document.createElement('div');
  document.body.appendChild(container);
  root = createRoot(container);
});

afterEach(() => {
  act(() => root.unmount());
  container.remove();
});

function render(element: JSX.Element): void {
  act(() => root.render(element));
}

function $(selector: string): HTMLElement {
  const found = container.querySelector(selector);
  if (!found) {
    throw new Error(`${selector} not rendered:\n${container.innerHTML}`);
  }
  return found as HTMLElement;
}

/** Set a controlled input's value the way a person typing does (React sees the change). */
function change(
  element: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement,
  value: string
) {
  const proto = Object.getPrototypeOf(element);
  Object.getOwnPropertyDescriptor(proto, 'value')!.set!.call(element, value);
  act(() => {
    element.dispatchEvent(
      new Event(element.tagName === 'SELECT' ? 'change' : 'input', {
        bubbles: true
      })
    );
  });
}

function actions(): IWorkspaceActions & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    describe: async name => {
      calls.push(`describe ${name}`);
      const summary = workspace(name, {
        conditions: [
          condition('ResourceReady', 'False', 'QuotaExceeded', 'no quota')
        ],
        workerNodes: ['aks-gpu-0']
      });
      return {
        summary,
        yaml: `metadata:\n  name: ${name}\n`,
        events: [
          {
            time: '',
            type: 'Warning',
            reason: 'ProvisioningFailed',
            message: 'quota',
            object: '',
            count: 3
          }
        ]
      };
    },
    openChat: n => calls.push(`chat ${n}`),
    openLogs: n => calls.push(`logs ${n}`),
    copySnippet: ws => calls.push(`copy ${ws.snippet}`),
    remove: n => calls.push(`delete ${n}`)
  };
}

describe('WorkspaceRow', () => {
  it('shows a failed condition with its reason on hover, and no chat', () => {
    const a = actions();
    render(
      <WorkspaceRow
        ws={workspace('ws1', {
          phase: 'failed',
          instanceType: 'Standard_NC24ads_A100_v4',
          conditions: [
            condition('ResourceReady', 'False', 'QuotaExceeded', 'no quota')
          ]
        })}
        actions={a}
      />
    );
    const resource = $('[data-condition="ResourceReady"]');
    expect(resource.dataset.state).toBe('failed');
    expect(resource.title).toBe(
      'ResourceReady: False (QuotaExceeded: no quota)'
    );
    expect($('.jp-Kaito-facts').textContent).toContain(
      'Standard_NC24ads_A100_v4'
    );
    expect(
      ($('button[title="Chat needs InferenceReady"]') as HTMLButtonElement)
        .disabled
    ).toBe(true);
  });

  it('offers chat, logs, the snippet and delete on a ready workspace', () => {
    const a = actions();
    render(
      <WorkspaceRow ws={ready('ws2', { costPerHour: 3.67 })} actions={a} />
    );
    expect($('.jp-Kaito-endpoint').textContent).toBe('http://127.0.0.1:5000');
    expect($('.jp-Kaito-cost').textContent).toBe('$3.67/h');
    container.querySelectorAll('button').forEach(b => {
      if (b.textContent !== 'Details') {
        act(() => b.click());
      }
    });
    expect(a.calls).toEqual([
      'chat ws2',
      'logs ws2',
      'copy %%kaito chat ws2\nWhat can you do?',
      'delete ws2'
    ]);
  });

  it('opens the details: conditions with messages, nodes, events, YAML', async () => {
    const a = actions();
    render(<WorkspaceRow ws={workspace('ws3')} actions={a} />);
    const details = [...container.querySelectorAll('button')].find(
      b => b.textContent === 'Details'
    )!;
    await act(async () => details.click());
    expect(a.calls).toEqual(['describe ws3']);
    expect(
      $('.jp-Kaito-conditions [data-condition="ResourceReady"]').textContent
    ).toContain('QuotaExceeded: no quota');
    expect($('.jp-Kaito-details').textContent).toContain(
      'Worker nodes: aks-gpu-0'
    );
    expect($('.jp-Kaito-events li[data-type="Warning"]').textContent).toBe(
      'ProvisioningFailed quota (×3)'
    );
    expect($('.jp-Kaito-yaml').textContent).toBe('metadata:\n  name: ws3\n');
  });
});

describe('DeployForm', () => {
  it('lists only the SKUs that fit and sends the chosen one', async () => {
    const sent: unknown[] = [];
    const p = preset('llama-3.1-8b-instruct', ['Standard_NC24ads_A100_v4']);
    render(
      <DeployForm
        preset={p}
        skus={SKUS}
        local={false}
        onDeploy={async r => {
          sent.push(r);
        }}
        onCancel={() => undefined}
      />
    );
    const options = [
      ...container.querySelectorAll('select[name="instanceType"] option')
    ];
    expect(options.map(o => o.getAttribute('value'))).toEqual([
      'Standard_NC24ads_A100_v4'
    ]);
    change($('input[name="count"]') as HTMLInputElement, '2');
    await act(async () => {
      $('form').dispatchEvent(
        new Event('submit', { bubbles: true, cancelable: true })
      );
    });
    expect(sent).toEqual([
      {
        preset: 'llama-3.1-8b-instruct',
        name: 'workspace-llama-3.1-8b-instruct',
        instanceType: 'Standard_NC24ads_A100_v4',
        count: 2
      }
    ]);
  });

  it('offers this machine first on the local backend and shows the error', async () => {
    const p = preset('smollm2-135m-instruct', ['Standard_T4'], { cpu: true });
    render(
      <DeployForm
        preset={p}
        skus={SKUS}
        local={true}
        onDeploy={async () => {
          throw new Error('workspace exists');
        }}
        onCancel={() => undefined}
      />
    );
    const select = $('select[name="instanceType"]') as HTMLSelectElement;
    expect(select.value).toBe('');
    expect(select.options[0].textContent).toBe('this machine');
    await act(async () => {
      $('form').dispatchEvent(
        new Event('submit', { bubbles: true, cancelable: true })
      );
    });
    expect($('.jp-Kaito-error').textContent).toBe('workspace exists');
  });
});

describe('NodeList', () => {
  it('shows the GPU model and count and which workspace uses it', () => {
    render(
      <NodeList
        items={[
          {
            name: 'aks-gpu-0',
            instanceType: 'Standard_NC24ads_A100_v4',
            gpuModel: 'A100',
            gpus: 1,
            gpusUsed: 1,
            gpuMemoryGib: 80,
            ready: true,
            workspaces: ['default/ws1'],
            pricePerHour: 3.67
          }
        ]}
      />
    );
    const row = $('li[data-node="aks-gpu-0"]');
    expect(row.textContent).toContain('1/1 × A100 80 GiB');
    expect(row.textContent).toContain('ws1');
    expect(row.textContent).toContain('$3.67/h');
  });
});

describe('ChatPanel', () => {
  it('lists only InferenceReady workspaces and streams the answer in', async () => {
    const store = new WorkspaceStore();
    store.reset([ready('good'), workspace('pending')]);
    let release: () => void = () => undefined;
    const client = {
      chat: async (
        name: string,
        messages: unknown,
        onDelta: (p: string) => void
      ) => {
        onDelta('Par');
        await new Promise<void>(resolve => (release = resolve));
        onDelta('is');
        return 'Paris';
      }
    } as unknown as KaitoClient;
    render(<ChatPanel client={client} store={store} />);
    const options = [
      ...container.querySelectorAll('select[aria-label="Workspace"] option')
    ];
    expect(options.map(o => o.textContent)).toEqual(['good']);

    change($('textarea') as HTMLTextAreaElement, 'Capital of France?');
    await act(async () => {
      $('form').dispatchEvent(
        new Event('submit', { bubbles: true, cancelable: true })
      );
    });
    // The first piece is on screen before the answer is finished.
    expect($('[data-role="assistant"]').textContent).toBe('Par');
    expect($('button[type="submit"]').textContent).toBe('Answering…');
    await act(async () => release());
    expect($('[data-role="user"]').textContent).toBe('Capital of France?');
    expect($('[data-role="assistant"]').textContent).toBe('Paris');

    // A workspace that turns ready appears in the picker (pushed, not polled).
    act(() => store.reset([ready('good'), ready('pending')]));
    const now = [
      ...container.querySelectorAll('select[aria-label="Workspace"] option')
    ];
    expect(now.map(o => o.textContent)).toEqual(['good', 'pending']);
  });
});
