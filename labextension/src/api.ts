import type {
  IAppliedList,
  IBackendInfo,
  IChatChunk,
  IChatMessage,
  IErrorBody,
  ILogLine,
  INodeList,
  IPresetList,
  ISkuList,
  IWorkspaceDetail,
  IWorkspaceList,
  IWorkspaceSummary
} from './wire';

/**
 * Sends one request to the Jupyter server, relative to its base URL. The plugin gives one built
 * on ServerConnection.makeRequest (so auth and XSRF come from Jupyter); tests give their own.
 */
export type Requester = (path: string, init?: RequestInit) => Promise<Response>;

/** A failed request, carrying the server's {code, message}. */
export class KaitoApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: IErrorBody
  ) {
    super(describe(body));
    this.name = 'KaitoApiError';
  }

  /** The message, its hint and its issues, for a person. */
  get text(): string {
    return describe(this.body);
  }
}

function describe(body: IErrorBody): string {
  const parts = [body.message];
  if (body.hint) {
    parts.push(`hint: ${body.hint}`);
  }
  return parts.concat(body.issues ?? []).join('\n');
}

/**
 * Splits a byte stream of NDJSON into parsed objects, whatever the chunking.
 */
export class NdjsonSplitter<T> {
  private buffer = '';

  /** Feed a chunk of text; returns the complete lines' objects. */
  push(text: string): T[] {
    this.buffer += text;
    const lines = this.buffer.split('\n');
    this.buffer = lines.pop() ?? '';
    return lines.filter(l => l.trim()).map(l => JSON.parse(l) as T);
  }

  /** The last line, if the stream ended without a newline. */
  end(): T[] {
    const rest = this.buffer.trim();
    this.buffer = '';
    return rest ? [JSON.parse(rest) as T] : [];
  }
}

async function readNdjson<T>(
  response: Response,
  onItem: (item: T) => void
): Promise<void> {
  const splitter = new NdjsonSplitter<T>();
  if (!response.body) {
    (splitter.push(await response.text()) as T[])
      .concat(splitter.end())
      .forEach(onItem);
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      break;
    }
    splitter.push(decoder.decode(value, { stream: true })).forEach(onItem);
  }
  splitter.end().forEach(onItem);
}

async function errorOf(response: Response): Promise<KaitoApiError> {
  let body: IErrorBody;
  try {
    body = (await response.json()) as IErrorBody;
  } catch {
    body = {
      code: 'http',
      message: `HTTP ${response.status}`,
      hint: null,
      issues: []
    };
  }
  return new KaitoApiError(response.status, body);
}

/** The sidebar's view of /kaito/api/. */
export class KaitoClient {
  constructor(private readonly request: Requester) {}

  private async json<T>(path: string, init?: RequestInit): Promise<T> {
    const response = await this.request(`kaito/api/${path}`, init);
    if (!response.ok) {
      throw await errorOf(response);
    }
    return (await response.json()) as T;
  }

  private send<T>(method: string, path: string, body: unknown): Promise<T> {
    return this.json<T>(path, {
      method,
      body: JSON.stringify(body),
      headers: { 'Content-Type': 'application/json' }
    });
  }

  workspaces(): Promise<IWorkspaceList> {
    return this.json('workspaces');
  }

  workspace(name: string): Promise<IWorkspaceDetail> {
    return this.json(`workspaces/${encodeURIComponent(name)}`);
  }

  apply(yaml: string, dryRun = false): Promise<IAppliedList> {
    return this.send('POST', 'workspaces', { yaml, dryRun });
  }

  deploy(
    preset: string,
    options: { name?: string; instanceType?: string; count?: number } = {}
  ): Promise<IAppliedList> {
    return this.send('POST', 'deploy', { preset, ...options });
  }

  remove(name: string): Promise<IWorkspaceSummary> {
    return this.json(`workspaces/${encodeURIComponent(name)}`, {
      method: 'DELETE'
    });
  }

  presets(): Promise<IPresetList> {
    return this.json('presets');
  }

  skus(): Promise<ISkuList> {
    return this.json('skus');
  }

  nodes(): Promise<INodeList> {
    return this.json('nodes');
  }

  backend(): Promise<IBackendInfo> {
    return this.json('backend');
  }

  use(
    backend: 'local' | 'kubernetes',
    options: { context?: string; namespace?: string } = {}
  ): Promise<IBackendInfo> {
    return this.send('PUT', 'backend', { backend, ...options });
  }

  /** Stream the workspace's logs, one line at a time; `signal` ends a followed stream. */
  async logs(
    name: string,
    onLine: (line: string) => void,
    options: { follow?: boolean; tail?: number; signal?: AbortSignal } = {}
  ): Promise<void> {
    const query = new URLSearchParams();
    query.set('follow', options.follow ? 'true' : 'false');
    if (options.tail) {
      query.set('tail', String(options.tail));
    }
    const response = await this.request(
      `kaito/api/workspaces/${encodeURIComponent(name)}/logs?${query}`,
      { signal: options.signal }
    );
    if (!response.ok) {
      throw await errorOf(response);
    }
    await readNdjson<ILogLine>(response, item => {
      if (item.error) {
        throw new KaitoApiError(200, item.error);
      }
      onLine(item.line);
    });
  }

  /** Stream a chat answer: `onDelta` gets each piece as it comes; resolves with the text. */
  async chat(
    name: string,
    messages: IChatMessage[],
    onDelta: (piece: string) => void,
    options: {
      maxTokens?: number;
      temperature?: number;
      signal?: AbortSignal;
    } = {}
  ): Promise<string> {
    const response = await this.request(
      `kaito/api/workspaces/${encodeURIComponent(name)}/chat`,
      {
        method: 'POST',
        body: JSON.stringify({
          messages,
          maxTokens: options.maxTokens,
          temperature: options.temperature
        }),
        headers: { 'Content-Type': 'application/json' },
        signal: options.signal
      }
    );
    if (!response.ok) {
      throw await errorOf(response);
    }
    let text = '';
    await readNdjson<IChatChunk>(response, chunk => {
      if (chunk.error) {
        throw new KaitoApiError(200, chunk.error);
      }
      if (chunk.delta) {
        text += chunk.delta;
        onDelta(chunk.delta);
      }
    });
    return text;
  }
}
