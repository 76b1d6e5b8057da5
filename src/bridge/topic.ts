// MQTT topic names and filters: validation, matching and overlap (pure).
//
// Matching follows MQTT 3.1.1 §4.7 / MQTT 5 §4.7: '+' matches one level,
// '#' the rest (including the parent level, 'a/#' matches 'a'), and a
// wildcard in the first level never matches a topic starting with '$'
// [MQTT-4.7.2-1].

/** Why a string is not a valid topic filter, or undefined. Messages cite the spec rule. */
export function topicFilterProblem(filter: string): string | undefined {
  if (filter.length === 0) return 'must not be empty [MQTT-4.7.3-1]'
  if (filter.includes('\u0000')) return 'must not contain NUL [MQTT-4.7.3-2]'
  if (Buffer.byteLength(filter) > 65535) return 'must be at most 65535 bytes [MQTT-4.7.3-3]'
  const levels = filter.split('/')
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i] ?? ''
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) {
      return "'#' must be a whole level and the last one [MQTT-4.7.1-2]"
    }
    if (level.includes('+') && level !== '+') return "'+' must be a whole level [MQTT-4.7.1-3]"
  }
  return undefined
}

/** Why a string is not a valid topic name (no wildcards), or undefined. */
export function topicNameProblem(topic: string): string | undefined {
  if (topic.length === 0) return 'must not be empty [MQTT-4.7.3-1]'
  if (topic.includes('\u0000')) return 'must not contain NUL [MQTT-4.7.3-2]'
  if (/[+#]/.test(topic)) return 'must not contain wildcards [MQTT-3.3.2-2]'
  if (Buffer.byteLength(topic) > 65535) return 'must be at most 65535 bytes [MQTT-4.7.3-3]'
  return undefined
}

/** A compiled filter: split once, matched many times. */
export class TopicFilter {
  readonly filter: string
  readonly #levels: readonly string[]
  readonly #wildFirst: boolean

  constructor(filter: string) {
    this.filter = filter
    this.#levels = filter.split('/')
    const first = this.#levels[0]
    this.#wildFirst = first === '+' || first === '#'
  }

  matches(topic: string): boolean {
    if (this.#wildFirst && topic.startsWith('$')) return false
    const levels = this.#levels
    let start = 0
    for (let i = 0; i < levels.length; i++) {
      const f = levels[i] as string
      if (f === '#') return true
      if (start > topic.length) return false
      let end = topic.indexOf('/', start)
      if (end < 0) end = topic.length
      if (f !== '+' && (end - start !== f.length || !topic.startsWith(f, start))) return false
      start = end + 1
    }
    // every filter level consumed: the topic must have no levels left
    return start === topic.length + 1
  }
}

export function topicMatches(filter: string, topic: string): boolean {
  return new TopicFilter(filter).matches(topic)
}

/**
 * Whether some topic name matches both filters. Used to refuse rule sets in
 * which two rules would handle the same message, or an `in` rule would
 * receive what an `out` rule sent.
 */
export function filtersOverlap(a: string, b: string): boolean {
  const la = a.split('/')
  const lb = b.split('/')
  // '$' topics: a leading wildcard matches none of them.
  const dollarA = (la[0] ?? '').startsWith('$')
  const dollarB = (lb[0] ?? '').startsWith('$')
  if ((dollarA && isWild(lb[0])) || (dollarB && isWild(la[0]))) return false
  const n = Math.max(la.length, lb.length)
  for (let i = 0; i < n; i++) {
    const x = la[i]
    const y = lb[i]
    if (x === '#' || y === '#') return true
    if (x === undefined || y === undefined) return false
    if (x === '+' || y === '+' || x === y) continue
    return false
  }
  return true
}

function isWild(level: string | undefined): boolean {
  return level === '+' || level === '#'
}
