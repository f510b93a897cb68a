import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ServerSentEvent, serverSentEvents } from './sse-reader.js';

/** A body that delivers `chunks` as they are cut. */
function body(chunks: readonly string[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
      controller.close();
    },
  });
}

async function read(
  chunks: readonly string[],
): Promise<{ events: ServerSentEvent[]; retry: number[] }> {
  const events: ServerSentEvent[] = [];
  const retry: number[] = [];
  for await (const event of serverSentEvents(body(chunks), (ms) => retry.push(ms))) {
    events.push(event);
  }
  return { events, retry };
}

const STREAM =
  'retry: 2000\n: connected\n\nevent: job.finished\ndata: {"a":1}\n\n' +
  ': heartbeat\n\ndata: one\ndata:two\n\nevent: x\n\n';

describe('server-sent events over fetch', () => {
  const expected = [
    { event: 'job.finished', data: '{"a":1}' },
    { event: 'message', data: 'one\ntwo' },
  ];

  it('reads events, skips comments and empty events, and hears the retry delay', async () => {
    assert.deepEqual(await read([STREAM]), { events: expected, retry: [2000] });
  });

  it('gives the same events however the stream is cut, with CRLF, CR or LF line ends', async () => {
    for (const ending of ['\n', '\r\n', '\r']) {
      const text = STREAM.replaceAll('\n', ending);
      for (const size of [1, 2, 3, 7]) {
        const chunks: string[] = [];
        for (let i = 0; i < text.length; i += size) chunks.push(text.slice(i, i + size));
        assert.deepEqual(
          (await read(chunks)).events,
          expected,
          `${JSON.stringify(ending)} ${size}`,
        );
      }
    }
  });

  it('drops an event the stream ends in the middle of', async () => {
    assert.deepEqual((await read(['data: half'])).events, []);
  });
});
