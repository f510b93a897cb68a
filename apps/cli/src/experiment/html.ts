// Writing HTML safely: escaped text and attributes, tables, and script contents that cannot
// close their element early.
import type { TableCell, TextTable } from './text-table.js';

const ENTITIES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Text (or an attribute's value in quotes) as itself. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (character) => ENTITIES[character] ?? character);
}

export function cellHtml(cell: TableCell): string {
  if (typeof cell === 'string') return escapeHtml(cell);
  if ('code' in cell) return `<code>${escapeHtml(cell.code)}</code>`;
  return `${escapeHtml(cell.value)}<br><span class="interval">${escapeHtml(cell.interval)}</span>`;
}

/** A header, breakable after each dot: metric names are long and the tables are wide. */
function headerHtml(header: string): string {
  return escapeHtml(header).replace(/\./g, '.<wbr>');
}

/** A table; one without rows is a line saying so. Rows with a verdict get its class. */
export function htmlTable(table: TextTable, emptyText: string): string {
  if (table.rows.length === 0) return `<p class="note">${escapeHtml(emptyText)}</p>`;
  const align = (index: number) => (table.numeric[index] === true ? ' class="number"' : '');
  const head = table.headers
    .map((header, index) => {
      const note = table.headerNotes?.[index];
      const title = note === undefined ? '' : ` title="${escapeHtml(note)}"`;
      return `<th scope="col"${align(index)}${title}>${headerHtml(header)}</th>`;
    })
    .join('');
  const body = table.rows
    .map((row) => {
      const cells = row.cells
        .map((cell, index) => {
          const isVerdict = row.verdict !== undefined && index === table.verdictColumn;
          const classes = [
            table.numeric[index] === true ? 'number' : '',
            isVerdict ? 'verdict' : '',
          ]
            .filter(Boolean)
            .join(' ');
          return `<td${classes === '' ? '' : ` class="${classes}"`}>${cellHtml(cell)}</td>`;
        })
        .join('');
      return `<tr${row.verdict === undefined ? '' : ` class="${row.verdict}"`}>${cells}</tr>`;
    })
    .join('\n');
  return `<div class="table-wrap"><table>\n<thead><tr>${head}</tr></thead>\n<tbody>\n${body}\n</tbody>\n</table></div>`;
}

/**
 * JSON for a `<script type="application/json">`: every `<` written as `\u003c`, which JSON reads
 * back as the same character, so that no string in the data can close the element (`</script>`)
 * or open a comment (`<!--`).
 */
export function jsonForScript(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c');
}

/**
 * Code for an inline `<script>`, refused when it holds a sequence that would end the element or
 * change how the parser reads it: rewriting someone else's code to dodge them could change what
 * it does.
 */
export function inlineScriptSource(source: string, what: string): string {
  const unsafe = /<\/script|<!--|<script/i.exec(source);
  if (unsafe !== null) {
    throw new Error(`${what} holds "${unsafe[0]}" at ${unsafe.index}: it cannot be inlined`);
  }
  return source;
}
