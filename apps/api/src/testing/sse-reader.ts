import assert from 'node:assert/strict';

/** One server-sent event as received, or a comment line. */
export type SseFrame =
  | { readonly kind: 'event'; readonly event: string; readonly data: string }
  | { readonly kind: 'comment'; readonly text: string };

/** Reads a `text/event-stream` response frame by frame. */
export class SseReader {
  readonly response: Response;
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly decoder = new TextDecoder();
  private buffer = '';
  private readonly frames: SseFrame[] = [];
  ended = false;

  private constructor(
    response: Response,
    private readonly abort: AbortController,
  ) {
    this.response = response;
    assert.ok(response.body !== null);
    this.reader = response.body.getReader();
  }

  static async open(url: string): Promise<SseReader> {
    const abort = new AbortController();
    const response = await fetch(url, { signal: abort.signal });
    return new SseReader(response, abort);
  }

  /** The next frame; fails after `timeoutMs`, returns null when the stream ended. */
  async next(timeoutMs = 5000): Promise<SseFrame | null> {
    const deadline = performance.now() + timeoutMs;
    while (this.frames.length === 0) {
      if (this.ended) return null;
      const remaining = deadline - performance.now();
      assert.ok(remaining > 0, `no server-sent event within ${timeoutMs} ms`);
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), remaining);
      });
      const chunk = await Promise.race([this.reader.read(), timeout]);
      clearTimeout(timer);
      if (chunk === 'timeout') continue;
      if (chunk.done) {
        this.ended = true;
        continue;
      }
      this.buffer += this.decoder.decode(chunk.value, { stream: true });
      this.parse();
    }
    return this.frames.shift() ?? null;
  }

  /** Reads frames until one matches; returns every frame read, the match last. */
  async until(match: (frame: SseFrame) => boolean, timeoutMs = 5000): Promise<SseFrame[]> {
    const read: SseFrame[] = [];
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const frame = await this.next(Math.max(1, deadline - performance.now()));
      assert.ok(frame !== null, 'the stream ended');
      read.push(frame);
      if (match(frame)) return read;
    }
  }

  /** Goes away like a client that closes its connection. */
  close(): void {
    this.abort.abort();
  }

  private parse(): void {
    for (;;) {
      const end = this.buffer.indexOf('\n\n');
      if (end < 0) return;
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) this.frames.push({ kind: 'comment', text: line.slice(1).trim() });
        else if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
      }
      if (data.length > 0) this.frames.push({ kind: 'event', event, data: data.join('\n') });
    }
  }
}
