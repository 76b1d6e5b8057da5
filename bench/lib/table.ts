// Result tables: Markdown pipe tables on stdout, so a run can be pasted into docs/benchmarks.md as is.

export type Row = Record<string, string | number>

/** Format a number for a table cell: fixed decimals, '-' for NaN. */
export function fmt(n: number, decimals = 1): string {
  return Number.isFinite(n) ? n.toFixed(decimals) : '-'
}

/** Render rows as a Markdown table. Columns are the union of the rows' keys, in first-seen order. */
export function renderTable(rows: readonly Row[]): string {
  const cols: string[] = []
  for (const r of rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k)
  if (cols.length === 0) return '(no rows)'
  const cell = (r: Row, c: string): string => {
    const v = r[c]
    return v === undefined ? '' : typeof v === 'number' ? String(Math.round(v * 100) / 100) : v
  }
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r, c).length)))
  const isNum = (v: string): boolean => /^-?[\d.,]+$/.test(v)
  const numeric = cols.map(
    (c) =>
      rows.some((r) => isNum(cell(r, c))) &&
      rows.every((r) => isNum(cell(r, c)) || cell(r, c) === '-' || cell(r, c) === ''),
  )
  const line = (vals: string[]): string =>
    `| ${vals.map((v, i) => (numeric[i] === true ? v.padStart(widths[i] ?? 0) : v.padEnd(widths[i] ?? 0))).join(' | ')} |`
  const sep = `|${widths.map((w, i) => (numeric[i] === true ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`
  return [line(cols), sep, ...rows.map((r) => line(cols.map((c) => cell(r, c))))].join('\n')
}

/** Print a titled table. */
export function printTable(title: string, rows: readonly Row[], note?: string): void {
  process.stdout.write(`\n### ${title}\n\n${renderTable(rows)}\n${note === undefined ? '' : `\n${note}\n`}\n`)
}
