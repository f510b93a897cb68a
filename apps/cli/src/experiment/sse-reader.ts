// A reader of server-sent events over fetch, by hand: no SSE client is among the project's
// dependencies, Node 20 has no EventSource, and the format is a few lines to parse (lines ending
// in CRLF, LF or CR; `field: value`; a blank line ends an event).

/** One event of a `text/event-stream`: its type (`message` unless named) and its data. */
export interface ServerSentEvent {
  event: string;
  /** The `data:` lines of the event, joined by newlines. */
  data: string;
}

/** The events of a stream's body, as they come; `onRetry` hears the reconnection delay it asks. */
export async function* serverSentEvents(
  body: ReadableStream<Uint8Array>,
  onRetry: (ms: number) => void = () => undefined,
): AsyncGenerator<ServerSentEvent> {
  const decoder = new TextDecoder();
  let buffer = '';
  let event = '';
  let data: string[] = [];
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    for (;;) {
      const end = lineEnd(buffer);
      if (end === null) break;
      const line = buffer.slice(0, end.at);
      buffer = buffer.slice(end.at + end.length);
      if (line === '') {
        if (data.length > 0)
          yield { event: event === '' ? 'message' : event, data: data.join('\n') };
        event = '';
        data = [];
        continue;
      }
      if (line.startsWith(':')) continue; // a comment (heartbeats)
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') event = value;
      else if (field === 'data') data.push(value);
      else if (field === 'retry' && /^\d+$/.test(value)) onRetry(Number(value));
    }
  }
}

/** Where the first line of `buffer` ends; null while it may not have (a CR may precede an LF). */
function lineEnd(buffer: string): { at: number; length: number } | null {
  for (let i = 0; i < buffer.length; i += 1) {
    const c = buffer.charCodeAt(i);
    if (c === 10) return { at: i, length: 1 };
    if (c === 13) {
      if (i + 1 === buffer.length) return null;
      return { at: i, length: buffer.charCodeAt(i + 1) === 10 ? 2 : 1 };
    }
  }
  return null;
}
