// The one "get, or create and remember" the store's per-queue and
// per-priority maps need. `make` should be a function defined once (not a
// fresh closure per call): some callers are on the per-message path.
export function getOrSet<K, V>(map: Map<K, V>, key: K, make: () => V): V {
  let v = map.get(key)
  if (v === undefined) {
    v = make()
    map.set(key, v)
  }
  return v
}

export function newMap<K, V>(): Map<K, V> {
  return new Map<K, V>()
}
