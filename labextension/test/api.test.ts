/**
 * @jest-environment node
 */
import { KaitoApiError, KaitoClient, NdjsonSplitter } from '../src/api';

function ndjson(chunks: string[], status = 200): Response {
  const encoder = new TextEncoder();
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      chunks.forEach(c => controller.enqueue(encoder.encode(c)));
      controller.close();
    }
  });
  return new Response(body, {
    status,
    headers: { 'Content-Type': 'application/x-ndjson' }
  });
}

describe('NdjsonSplitter', () => {
  it('parses whole lines whatever the chunking', () => {
    const s = new NdjsonSplitter<{ n: number }>();
    expect(s.push('{"n":1}\n{"n"')).toEqual([{ n: 1 }]);
    expect(s.push(':2}\n\n{"n":3}')).toEqual([{ n: 2 }]);
    expect(s.end()).toEqual([{ n: 3 }]);
    expect(s.end()).toEqual([]);
  });
});

describe('KaitoClient', () => {
  it('streams chat pieces as they arrive', async () => {
    const calls: [string, RequestInit | undefined][] = [];
    const client = new KaitoClient(async (path, init) => {
      calls.push([path, init]);
      return ndjson([
        '{"delta":"Par","done":false}\n{"del',
        'ta":"is","done":false}\n',
        '{"delta":"","done":true,"finishReason":"stop"}\n'
      ]);
    });
    const pieces: string[] = [];
    const text = await client.chat(
      'ws',
      [{ role: 'user', content: 'Capital?' }],
      p => pieces.push(p),
      {
        maxTokens: 8
      }
    );
    expect(pieces).toEqual(['Par', 'is']);
    expect(text).toBe('Paris');
    expect(calls[0][0]).toBe('kaito/api/workspaces/ws/chat');
    expect(JSON.parse(calls[0][1]!.body as string)).toEqual({
      messages: [{ role: 'user', content: 'Capital?' }],
      maxTokens: 8
    });
  });

  it('raises the server error with its hint and issues', async () => {
    const client = new KaitoClient(
      async () =>
        new Response(
          JSON.stringify({
            code: 'invalid',
            message: '2 problems found',
            hint: 'fix them',
            issues: ['a', 'b']
          }),
          { status: 422 }
        )
    );
    const failure = await client.apply('kind: Workspace').catch(e => e);
    expect(failure).toBeInstanceOf(KaitoApiError);
    expect(failure.status).toBe(422);
    expect(failure.text).toBe('2 problems found\nhint: fix them\na\nb');
  });

  it('ends a log stream at an error line', async () => {
    const client = new KaitoClient(async () =>
      ndjson([
        '{"line":"one","error":null}\n',
        '{"line":"","error":{"code":"backend","message":"gone","hint":null,"issues":[]}}\n'
      ])
    );
    const lines: string[] = [];
    await expect(
      client.logs('ws', l => lines.push(l), { tail: 5 })
    ).rejects.toThrow('gone');
    expect(lines).toEqual(['one']);
  });
});
