// Writing GitHub-flavoured Markdown safely: text that reads as itself, code spans that survive
// backticks and pipes, and tables.
import type { TableCell, TextTable } from './text-table.js';

/** Text as itself: the characters Markdown would read as markup or as a table's pipe, escaped. */
export function markdownText(text: string): string {
  return text.replace(/[\\`*_[\]<|]/g, (character) => `\\${character}`);
}

/** A code span, fenced with more backticks than the text holds in a row. */
export function markdownCode(text: string): string {
  const longestRun = Math.max(0, ...Array.from(text.matchAll(/`+/g), (match) => match[0].length));
  const fence = '`'.repeat(longestRun + 1);
  // A span starting or ending with a backtick needs a space between it and the fence.
  const padded = text.startsWith('`') || text.endsWith('`') ? ` ${text} ` : text;
  return `${fence}${padded}${fence}`;
}

/** A cell's content in running text. */
export function markdownInline(cell: TableCell): string {
  if (typeof cell === 'string') return markdownText(cell);
  if ('value' in cell) return markdownText(`${cell.value} ${cell.interval}`);
  return markdownCode(cell.code);
}

function cellMarkdown(cell: TableCell): string {
  // A table splits on every unescaped pipe, code spans included (text has its pipes escaped).
  return typeof cell === 'object' && 'code' in cell
    ? markdownCode(cell.code).replace(/\|/g, '\\|')
    : markdownInline(cell);
}

/** A pipe table; a table without rows says so in a line instead. */
export function markdownTable(table: TextTable, emptyText: string): string {
  if (table.rows.length === 0) return `_${markdownText(emptyText)}_`;
  const line = (cells: readonly string[]) => `| ${cells.join(' | ')} |`;
  return [
    line(table.headers.map(markdownText)),
    line(table.numeric.map((numeric) => (numeric ? '---:' : '---'))),
    ...table.rows.map((row) => line(row.cells.map(cellMarkdown))),
  ].join('\n');
}
