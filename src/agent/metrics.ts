// Prometheus text exposition (format 0.0.4) built from plain stats objects.
// Components only report numbers; naming and labels live here, in one place.

type Labels = Readonly<Record<string, string | number>>
interface Sample {
  readonly labels?: Labels
  readonly value: number
}

export class MetricsText {
  #out: string[] = []

  gauge(name: string, help: string, samples: number | readonly Sample[]): this {
    return this.#family(name, 'gauge', help, samples)
  }

  counter(name: string, help: string, samples: number | readonly Sample[]): this {
    return this.#family(name, 'counter', help, samples)
  }

  /**
   * A histogram from per-bucket counts (`counts[i]` for values up to `bounds[i]`, and one more for the rest):
   * cumulative `_bucket` samples with `le`, then `_sum` and `_count`.
   */
  histogram(
    name: string,
    help: string,
    h: { readonly bounds: readonly number[]; readonly counts: readonly number[]; readonly sumSec: number },
  ): this {
    this.#out.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} histogram`)
    let cumulative = 0
    for (const [i, le] of h.bounds.entries()) {
      cumulative += h.counts[i] ?? 0
      this.#out.push(`${name}_bucket${formatLabels({ le: formatValue(le) })} ${cumulative}`)
    }
    cumulative += h.counts[h.bounds.length] ?? 0
    this.#out.push(
      `${name}_bucket{le="+Inf"} ${cumulative}`,
      `${name}_sum ${formatValue(h.sumSec)}`,
      `${name}_count ${cumulative}`,
    )
    return this
  }

  toString(): string {
    return this.#out.join('\n') + '\n'
  }

  #family(name: string, type: string, help: string, samples: number | readonly Sample[]): this {
    this.#out.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`)
    const list = typeof samples === 'number' ? [{ value: samples }] : samples
    for (const s of list) this.#out.push(`${name}${formatLabels(s.labels)} ${formatValue(s.value)}`)
    return this
  }
}

/** { reason: count } → samples labelled { [label]: reason } */
export function byLabel(label: string, counts: Readonly<Record<string, number>>): Sample[] {
  return Object.entries(counts).map(([k, value]) => ({ labels: { [label]: k }, value }))
}

function escapeHelp(help: string): string {
  return help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')
}

function formatLabels(labels: Labels | undefined): string {
  if (labels === undefined) return ''
  const parts = Object.entries(labels).map(
    ([k, v]) => `${k}="${String(v).replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}"`,
  )
  return parts.length === 0 ? '' : `{${parts.join(',')}}`
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN'
  if (v === Infinity) return '+Inf'
  if (v === -Infinity) return '-Inf'
  return String(v)
}
