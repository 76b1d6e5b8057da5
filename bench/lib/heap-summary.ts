// Heap snapshot summary: self size and count per (node type, constructor/name), and the
// difference between two snapshots. Used by the memory-breakdown scenario to say what one
// connection is made of ("2,000 × Client, 2,000 × Socket, 4,000 × BufferList, …").
import { readFileSync } from 'node:fs'

interface RawSnapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } }
  nodes: number[]
  strings: string[]
}

export interface HeapGroup {
  key: string
  count: number
  bytes: number
}

/** Per-group totals of a .heapsnapshot file, keyed "type:name" (names of strings and code are collapsed). */
export function summariseSnapshot(path: string): Map<string, HeapGroup> {
  const raw = JSON.parse(readFileSync(path, 'utf8')) as RawSnapshot
  const fields = raw.snapshot.meta.node_fields
  const types = raw.snapshot.meta.node_types[0]
  const width = fields.length
  const iType = fields.indexOf('type')
  const iName = fields.indexOf('name')
  const iSize = fields.indexOf('self_size')
  const groups = new Map<string, HeapGroup>()
  for (let i = 0; i < raw.nodes.length; i += width) {
    const type = types[raw.nodes[i + iType] ?? 0] ?? '?'
    const size = raw.nodes[i + iSize] ?? 0
    let name: string
    if (type === 'string' || type === 'concatenated string' || type === 'sliced string') name = '(strings)'
    else if (type === 'code') name = '(compiled code)'
    else if (type === 'number') name = '(heap numbers)'
    else if (type === 'closure') name = '(closures)'
    else if (type === 'array') name = raw.strings[raw.nodes[i + iName] ?? 0] ?? '?'
    else if (type === 'hidden' || type === 'object shape')
      name = `(${type}) ${raw.strings[raw.nodes[i + iName] ?? 0] ?? '?'}`
    else name = raw.strings[raw.nodes[i + iName] ?? 0] ?? '?'
    if (name.length > 60) name = `${name.slice(0, 57)}...`
    const key = `${type}:${name}`
    const g = groups.get(key)
    if (g === undefined) groups.set(key, { key, count: 1, bytes: size })
    else {
      g.count++
      g.bytes += size
    }
  }
  return groups
}

/** Totals per node type (object, closure, code, string, array, hidden, native, …). */
export function byType(groups: Map<string, HeapGroup>): Map<string, number> {
  const out = new Map<string, number>()
  for (const g of groups.values()) {
    const t = g.key.slice(0, g.key.indexOf(':'))
    out.set(t, (out.get(t) ?? 0) + g.bytes)
  }
  return out
}

/** Groups that grew from `before` to `after`, largest growth first. */
export function diffSnapshots(before: Map<string, HeapGroup>, after: Map<string, HeapGroup>, top = 25): HeapGroup[] {
  const out: HeapGroup[] = []
  for (const [key, a] of after) {
    const b = before.get(key)
    out.push({ key, count: a.count - (b?.count ?? 0), bytes: a.bytes - (b?.bytes ?? 0) })
  }
  return out.sort((x, y) => y.bytes - x.bytes).slice(0, top)
}
