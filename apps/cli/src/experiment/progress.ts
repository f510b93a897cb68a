import { SingleBar } from 'cli-progress';

// Progress of a long run on stderr: a bar on a terminal, and one plain line every few seconds
// otherwise (a CI log), so that neither floods nor goes silent.

export interface ProgressUpdate {
  /** Done so far, of `total`. */
  done: number;
  total: number;
  /** What is running, e.g. the variant. */
  label: string;
}

export interface Progress {
  update(progress: ProgressUpdate): void;
  stop(): void;
}

/** How often a line is written when stderr is not a terminal. */
const LINE_EVERY_MS = 5000;
/** No line before this: a run that ends sooner says nothing. */
const FIRST_LINE_AFTER_MS = 2000;

/** A progress reporter on `stream` (no output at all when `quiet`). */
export function startProgress(
  stream: NodeJS.WriteStream = process.stderr,
  quiet = false,
): Progress {
  if (quiet) return { update: () => undefined, stop: () => undefined };
  if (stream.isTTY) {
    const bar = new SingleBar({
      stream,
      format: '{bar} {percentage}% | {label}',
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 50,
    });
    let started = false;
    return {
      update: ({ done, total, label }) => {
        if (!started) {
          bar.start(total, done, { label });
          started = true;
        } else {
          bar.setTotal(total);
          bar.update(done, { label });
        }
      },
      stop: () => {
        if (started) bar.stop();
      },
    };
  }
  // Quiet for the first seconds (most offline runs end by then), then a line every few seconds
  // and one at the end.
  const startedAt = Date.now();
  let lastLineAt = startedAt - LINE_EVERY_MS + FIRST_LINE_AFTER_MS;
  let printed = false;
  let finished = false;
  return {
    update: ({ done, total, label }) => {
      const now = Date.now();
      const last = done >= total;
      if (finished || (!(last && printed) && now - lastLineAt < LINE_EVERY_MS)) return;
      if (last && !printed) return;
      lastLineAt = now;
      printed = true;
      finished = last;
      const percent = total === 0 ? 100 : Math.floor((100 * done) / total);
      stream.write(`progress: ${percent}% ${label}\n`);
    },
    stop: () => undefined,
  };
}
