// Topic matching for retained lookups, as aedes applies it on live delivery.

/**
 * Does `topic` match the subscription `filter`? '+' is one level (possibly
 * empty, [MQTT-4.7.1-3]), '#' this level and every one below it, including
 * the parent ([MQTT-4.7.1-2]); a leading wildcard does not match a topic that
 * starts with '$' ([MQTT-4.7.2-1]), as aedes applies on live delivery.
 */
export function topicMatches(filter: string, topic: string): boolean {
  if (
    topic.charCodeAt(0) === 36 /* $ */ &&
    (filter.charCodeAt(0) === 43 /* + */ || filter.charCodeAt(0) === 35) /* # */
  ) {
    return false
  }
  const f = filter.split('/')
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    const level = f[i]
    if (level === '#') return true
    if (i >= t.length) return false
    if (level !== '+' && level !== t[i]) return false
  }
  return f.length === t.length
}

/**
 * Literal text every topic matching `filter` starts with: up to the first
 * wildcard, minus a trailing '/' (so 'a/#' also finds its parent 'a').
 */
function literalPrefix(filter: string): string {
  let end = filter.length
  const plus = filter.indexOf('+')
  const hash = filter.indexOf('#')
  if (plus !== -1) end = plus
  if (hash !== -1 && hash < end) end = hash
  let prefix = filter.slice(0, end)
  if (end < filter.length && prefix.endsWith('/')) prefix = prefix.slice(0, -1)
  return prefix
}

/** Prefixes to scan for a set of filters: sorted, none a prefix of another, so ranges are disjoint. */
export function scanPrefixes(filters: readonly string[]): string[] {
  const sorted = [...new Set(filters.map(literalPrefix))].sort()
  const out: string[] = []
  for (const p of sorted) {
    const last = out[out.length - 1]
    if (last !== undefined && p.startsWith(last)) continue
    out.push(p)
  }
  return out
}
