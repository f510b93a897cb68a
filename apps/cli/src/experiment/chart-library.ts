// The chart library's browser build, read from the installed echarts package, for report.html to
// inline: the page must open offline, so it loads nothing.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';

/** The source of ECharts' minified browser build (it defines the global `echarts`). */
export async function readChartLibrary(): Promise<string> {
  const path = createRequire(import.meta.url).resolve('echarts/dist/echarts.min.js');
  return readFile(path, 'utf8');
}
