import type {
  ICondition,
  IPresetInfo,
  ISkuInfo,
  IWorkspaceSummary
} from '../src/wire';

export function condition(
  type: string,
  status: 'True' | 'False' | 'Unknown',
  reason: string | null = null,
  message: string | null = null
): ICondition {
  return { type, status, reason, message, lastTransitionTime: null };
}

export function workspace(
  name: string,
  extra: Partial<IWorkspaceSummary> = {}
): IWorkspaceSummary {
  return {
    name,
    namespace: 'default',
    mode: 'inference',
    preset: 'smollm2-135m-instruct',
    phase: 'pending',
    instanceType: null,
    nodeCount: 1,
    created: '2026-12-03T12:00:00Z',
    conditions: [],
    workerNodes: [],
    endpoint: null,
    costPerHour: null,
    costBasis: null,
    resourceVersion: '1',
    snippet: `%%kaito chat ${name}\nWhat can you do?`,
    ...extra
  };
}

export function ready(name: string, extra: Partial<IWorkspaceSummary> = {}) {
  return workspace(name, {
    phase: 'ready',
    conditions: [
      condition('ResourceReady', 'True'),
      condition('InferenceReady', 'True'),
      condition('WorkspaceSucceeded', 'True')
    ],
    endpoint: 'http://127.0.0.1:5000',
    ...extra
  });
}

export const SKUS: ISkuInfo[] = [
  {
    name: 'Standard_NC6s_v3',
    cloud: 'azure',
    gpus: 1,
    gpuModel: 'V100',
    gpuMemoryGib: 16,
    vcpus: 6,
    memoryGib: 112,
    pricePerHour: 3.06,
    priceBasis: 'azure eastus list price (unverified)'
  },
  {
    name: 'Standard_NC24ads_A100_v4',
    cloud: 'azure',
    gpus: 1,
    gpuModel: 'A100',
    gpuMemoryGib: 80,
    vcpus: 24,
    memoryGib: 220,
    pricePerHour: null,
    priceBasis: null
  },
  {
    name: 'Standard_T4',
    cloud: 'azure',
    gpus: 1,
    gpuModel: 'T4',
    gpuMemoryGib: 8,
    vcpus: 4,
    memoryGib: 28,
    pricePerHour: null,
    priceBasis: null
  }
];

export function preset(
  name: string,
  fits: string[],
  extra: Partial<IPresetInfo> = {}
): IPresetInfo {
  return {
    name,
    family: name.split('-')[0],
    paramsB: 8,
    contextLength: 8192,
    gpuMemoryGib: 22,
    tuning: true,
    cpu: false,
    deprecated: false,
    fits,
    ...extra
  };
}
