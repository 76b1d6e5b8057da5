// Device isolation: which topics a certificate-identified device may publish
// to, subscribe to and receive. Pure; table-tested in
// test/unit/local-broker/acl.test.ts.
//
// Rules (docs/certificates.md "Device isolation"):
// - Deny by default. A device gets its templates (default `devices/{id}/#` for
//   both directions) with `{id}` replaced by its identity, plus the grants of
//   every group whose `members` pattern matches its id.
// - The identity comes from the certificate, never from a client-chosen
//   string, and cannot contain `/ + #` (checked before it gets here), so a
//   template cannot be widened by it (CVE-2017-7650).
// - A PUBLISH is allowed when a publish filter matches its topic.
// - A SUBSCRIBE filter is allowed only when a subscribe filter *covers* it:
//   every topic the requested filter can match is matched by the allowed one.
//   `#`, `+/+/#`, `devices/+/x` are therefore refused to a device whose space
//   is `devices/d1/#`, while `devices/d1/+/temp` is fine.
// - Wildcards in a first level never match `$` topics [MQTT-4.7.2-1]: a grant
//   of `#` does not cover `$SYS/#`.
// - Request topics (`devices/{id}/$certs/csr`) are publishable by their own
//   device and answered by the agent; reply topics (`devices/{id}/$certs/cert`)
//   are subscribable by their own device and publishable by nobody but the agent.
// - Broadcast topics (the CRL) are subscribable by every identified device.

import { LocalBrokerError } from './errors.js'

export interface AclGroupOptions {
  readonly name: string
  /** Device ids, exact or with `*` wildcards (`press-*`). */
  readonly members: readonly string[]
  readonly publish: readonly string[]
  readonly subscribe: readonly string[]
}

export interface AclOptions {
  /** Topic filter templates with `{id}`; default for every identified device. */
  readonly publish: readonly string[]
  readonly subscribe: readonly string[]
  readonly groups?: readonly AclGroupOptions[]
  /** Templates of topics a device publishes to ask the agent (consumed, not forwarded). */
  readonly requests?: readonly string[]
  /** Templates of topics only the agent publishes; a device may subscribe to its own. */
  readonly replies?: readonly string[]
  /** Topics (no `{id}`) every identified device may subscribe to. */
  readonly broadcast?: readonly string[]
}

export type PublishDecision = 'allow' | 'deny' | 'request'

/** A template or rule that is not a valid topic filter: EDGE_ERR_BROKER_ACL_INVALID. */
export class AclError extends LocalBrokerError {
  override readonly name = 'AclError'
  constructor(message: string) {
    super('EDGE_ERR_BROKER_ACL_INVALID', message)
  }
}

type Levels = readonly string[]

interface CompiledGroup {
  readonly name: string
  readonly members: readonly RegExp[]
  readonly publish: readonly string[]
  readonly subscribe: readonly string[]
}

/** The compiled policy; `forDevice()` gives the rules of one identity. */
export class Acl {
  readonly #opts: AclOptions
  readonly #groups: readonly CompiledGroup[]
  readonly #reserved: readonly Levels[]

  private constructor(opts: AclOptions, groups: CompiledGroup[]) {
    this.#opts = opts
    this.#groups = groups
    this.#reserved = (opts.replies ?? []).map((t) => split(expand(t, '+')))
  }

  /** Checks every template; throws AclError naming the first bad one. */
  static compile(opts: AclOptions): Acl {
    const check = (where: string, template: string, mayUseId: boolean): void => {
      if (!mayUseId && template.includes('{id}')) throw new AclError(`${where}: ${template} must not contain {id}`)
      const problem = filterProblem(expand(template, 'x'))
      if (problem !== undefined) throw new AclError(`${where}: ${JSON.stringify(template)} ${problem}`)
    }
    opts.publish.forEach((t) => check('publish', t, true))
    opts.subscribe.forEach((t) => check('subscribe', t, true))
    ;(opts.requests ?? []).forEach((t) => {
      check('requests', t, true)
      if (/[+#]/.test(t)) throw new AclError(`requests: ${t} must be a topic name, not a filter`)
    })
    ;(opts.replies ?? []).forEach((t) => check('replies', t, true))
    ;(opts.broadcast ?? []).forEach((t) => check('broadcast', t, false))
    const groups = (opts.groups ?? []).map((g) => {
      g.publish.forEach((t) => check(`groups.${g.name}.publish`, t, true))
      g.subscribe.forEach((t) => check(`groups.${g.name}.subscribe`, t, true))
      return { name: g.name, members: g.members.map(globToRegExp), publish: g.publish, subscribe: g.subscribe }
    })
    return new Acl(opts, groups)
  }

  /** The rules of one device (compute once per connection). */
  forDevice(id: string): DeviceAcl {
    const groups = this.#groups.filter((g) => g.members.some((m) => m.test(id)))
    const publish = [...this.#opts.publish, ...groups.flatMap((g) => g.publish)].map((t) => split(expand(t, id)))
    const subscribe = [...this.#opts.subscribe, ...groups.flatMap((g) => g.subscribe)].map((t) => split(expand(t, id)))
    const requests = (this.#opts.requests ?? []).map((t) => expand(t, id))
    const replies = (this.#opts.replies ?? []).map((t) => split(expand(t, id)))
    const broadcast = (this.#opts.broadcast ?? []).map(split)
    return new DeviceAcl(
      id,
      groups.map((g) => g.name),
      publish,
      subscribe,
      requests,
      [...replies, ...broadcast],
      this.#reserved,
    )
  }

  /** True for topics nobody but the agent may publish (every device's reply topics). */
  reservedForAgent(topic: string): boolean {
    const t = split(topic)
    return this.#reserved.some((f) => matches(f, t))
  }
}

export class DeviceAcl {
  constructor(
    readonly id: string,
    readonly groups: readonly string[],
    private readonly pub: readonly Levels[],
    private readonly sub: readonly Levels[],
    private readonly requests: readonly string[],
    /** Filters subscribable besides `sub`: own reply topics and broadcasts. */
    private readonly extraSub: readonly Levels[],
    private readonly reserved: readonly Levels[],
  ) {}

  publish(topic: string): PublishDecision {
    if (this.requests.includes(topic)) return 'request'
    const t = split(topic)
    if (this.reserved.some((f) => matches(f, t))) return 'deny'
    return this.pub.some((f) => matches(f, t)) ? 'allow' : 'deny'
  }

  subscribe(filter: string): boolean {
    const r = split(filter)
    return this.sub.some((a) => covers(a, r)) || this.extraSub.some((a) => covers(a, r))
  }

  /** For delivery (retained messages, sessions restored): may this device receive `topic`? */
  receive(topic: string): boolean {
    const t = split(topic)
    return this.sub.some((f) => matches(f, t)) || this.extraSub.some((f) => matches(f, t))
  }
}

function split(s: string): Levels {
  return s.split('/')
}

function expand(template: string, id: string): string {
  return template.split('{id}').join(id)
}

function isWild(level: string | undefined): boolean {
  return level === '+' || level === '#'
}

/** MQTT topic matching [MQTT-4.7]: does `filter` match `topic`? */
export function topicMatches(filter: string, topic: string): boolean {
  return matches(split(filter), split(topic))
}

function matches(f: Levels, t: Levels): boolean {
  // [MQTT-4.7.2-1] wildcards in the first level do not match $ topics
  if (isWild(f[0]) && (t[0] ?? '').startsWith('$')) return false
  for (let i = 0; i < f.length; i++) {
    const fl = f[i]
    if (fl === '#') return true // also matches the parent level [MQTT-4.7.1-2]
    const tl = t[i]
    if (tl === undefined) return false
    if (fl !== '+' && fl !== tl) return false
  }
  return f.length === t.length
}

/** Does `allowed` match every topic that `requested` can match? */
export function filterCovers(allowed: string, requested: string): boolean {
  return covers(split(allowed), split(requested))
}

function covers(a: Levels, r: Levels): boolean {
  // A first-level wildcard does not reach $ topics, so it cannot cover a
  // request for them; and a request with a first-level wildcard never sees $
  // topics, so a literal-$ grant is irrelevant to it.
  if (isWild(a[0]) && (r[0] ?? '').startsWith('$')) return false
  for (let i = 0; ; i++) {
    const al = a[i]
    const rl = r[i]
    if (al === undefined) return rl === undefined
    if (al === '#') return true
    if (rl === undefined) return false // allowed continues with something other than '#'
    if (rl === '#') return false
    if (al === '+') continue
    if (rl === '+' || al !== rl) return false
  }
}

/** Why `filter` is not a valid MQTT 3.1.1 topic filter, or undefined. */
export function filterProblem(filter: string): string | undefined {
  if (filter.length === 0) return 'must not be empty'
  if (filter.includes('\u0000')) return 'must not contain NUL'
  const levels = filter.split('/')
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i] ?? ''
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) return "'#' must be a whole level and the last one"
    if (l.includes('+') && l !== '+') return "'+' must be a whole level"
  }
  return undefined
}

function globToRegExp(pattern: string): RegExp {
  const body = pattern
    .split('*')
    .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*')
  return new RegExp(`^${body}$`, 's')
}
