// A table as text, before it is written as Markdown or HTML: the reports build their tables once
// in this shape and each renderer only writes it out.

/** A cell: plain text, an identifier that reads best as code, or an estimate and its interval. */
export type TableCell =
  string | { readonly code: string } | { readonly value: string; readonly interval: string };

export type Verdict = 'pass' | 'fail';

/** A verdict as text: a failure in capitals, to stand out in a plain-text table. */
export function verdictText(verdict: Verdict): string {
  return verdict === 'pass' ? 'pass' : 'FAIL';
}

export interface TableRow {
  readonly cells: readonly TableCell[];
  /** Colours the row's verdict cell in HTML; Markdown shows it in the cell's text. */
  readonly verdict?: Verdict;
}

export interface TextTable {
  readonly headers: readonly string[];
  /** What a header means, where it needs saying (HTML shows it on hover). */
  readonly headerNotes?: readonly (string | undefined)[];
  /** Right-aligned columns (numbers). */
  readonly numeric: readonly boolean[];
  readonly rows: readonly TableRow[];
  /** The column that says pass or fail. */
  readonly verdictColumn?: number;
}
