// The run's plot: gnuplot (Debian package gnuplot-nox) renders a PNG from the
// samples written as a tab-separated file next to it.
import { spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

export interface PlotRow {
  readonly day: number
  readonly rssBytes: number
  readonly dbBytes: number
  readonly walBytes: number
  readonly depth: number
  readonly droppedEvicted: number
  readonly droppedExpired: number
  readonly droppedOther: number
  readonly cpuPct: number
  /** V8 heap in use; 0 when unknown. */
  readonly heapUsedBytes?: number
  /** The gateway's ACME certificate: simulated hours left (0 when expired or none). */
  readonly gatewayLeftH?: number
  /** 1 while the bridge to the upstream is connected. */
  readonly bridgeUp?: number
}

export const GNUPLOT_INSTALL = 'apt-get install -y gnuplot-nox'

export function gnuplotAvailable(): boolean {
  const r = spawnSync('gnuplot', ['--version'], { encoding: 'utf8' })
  return r.status === 0
}

/** Writes samples.tsv and soak.png into `dir`; returns the PNG path, or throws with gnuplot's message. */
export function plot(
  dir: string,
  rows: readonly PlotRow[],
  title: string,
  events: readonly { day: number; label: string }[],
): string {
  const data = join(dir, 'samples.tsv')
  const mb = (b: number) => (b / 1048576).toFixed(3)
  writeFileSync(
    data,
    ['# day\trss_mb\tdb_mb\twal_mb\tdepth\tevicted\texpired\tother\tcpu_pct\theap_mb\tgateway_left_h\tbridge_up']
      .concat(
        rows.map((r) =>
          [
            r.day.toFixed(4),
            mb(r.rssBytes),
            mb(r.dbBytes),
            mb(r.walBytes),
            r.depth,
            r.droppedEvicted,
            r.droppedExpired,
            r.droppedOther,
            r.cpuPct.toFixed(1),
            mb(r.heapUsedBytes ?? 0),
            (r.gatewayLeftH ?? 0).toFixed(2),
            r.bridgeUp ?? 0,
          ].join('\t'),
        ),
      )
      .join('\n') + '\n',
  )
  const png = join(dir, 'soak.png')
  const marks = events
    .map((e) => `set arrow from ${e.day},graph 0 to ${e.day},graph 1 nohead lc rgb '#bbbbbb' dt 2`)
    .join('\n')
  const script = `
set terminal pngcairo size 1200,1800 font ',10'
set output '${png}'
set datafile separator '\\t'
set multiplot layout 6,1 title ${JSON.stringify(title)}
set grid
set key left top
set xrange [0:*]
${marks}
set ylabel 'MB'
set title 'agent RSS and V8 heap in use'
plot '${data}' using 1:2 with lines lw 2 title 'RSS', '' using 1:10 with lines lw 2 title 'V8 heap used'
set title 'database and WAL size'
plot '${data}' using 1:3 with lines lw 2 title 'database', '' using 1:4 with lines lw 2 title 'WAL'
set ylabel 'messages'
set title 'buffer depth'
plot '${data}' using 1:5 with lines lw 2 title 'queued'
set title 'dropped (cumulative, by reason)'
plot '${data}' using 1:6 with lines lw 2 title 'evicted-full', '' using 1:7 with lines lw 2 title 'expired', '' using 1:8 with lines lw 2 title 'other'
set ylabel '% of one core'
set title 'agent CPU'
plot '${data}' using 1:9 with lines title 'CPU'
set ylabel 'simulated hours'
set y2label 'connected'
set y2range [0:1.2]
set y2tics 0,1,1
set xlabel 'simulated day'
set title "the gateway's ACME certificate: time left (0 = expired), and the bridge"
plot '${data}' using 1:11 with lines lw 2 title 'certificate time left', '' using 1:12 axes x1y2 with steps lw 2 lc rgb '#009e73' title 'bridge connected'
unset multiplot
`
  const r = spawnSync('gnuplot', [], { input: script, encoding: 'utf8', timeout: 60_000 })
  if (r.status !== 0) throw new Error(`gnuplot failed: ${r.stderr || r.error?.message || `exit ${r.status}`}`)
  return png
}
