// One ACL for every client of the local broker, whatever listener it came
// in on: anonymous clients, users of the password file, and certificate-
// identified devices (whose device templates, acl.ts, still apply on top).
// Pure; table-tested in test/unit/local-broker/client-acl.test.ts.
//
// Rules (each a list of topic filters):
// - `publish`: a PUBLISH (and a Will) is allowed when a filter matches its topic;
// - `subscribe`: a SUBSCRIBE filter is allowed when one of these covers it
//   (every topic it can match is matched; acl.ts filterCovers);
// - `read`: topics the client may receive. A SUBSCRIBE that no `subscribe`
//   filter covers is still allowed when it overlaps a `read` filter, and then
//   only the readable topics are delivered (Mosquitto's `read`);
// - `deny`: wins over every grant, for publish, subscribe (a filter that
//   overlaps a denied one) and delivery.
// Who gets which rules: `anonymous` and `patterns` for clients without a user name; for a user
// (or a device, by its id) its `users` entry, every `groups` entry whose
// `members` match the name (`*` wildcards), and every `patterns` entry. In
// groups and patterns `%u` and `{id}` stand for the user name, `%c` for the
// client id; a name or client id containing `/ + #` gets no rule that uses it,
// so it cannot widen a template (CVE-2017-7650).
// With no rule at all configured the ACL is off: every client may do anything
// outside the agent's own spaces (what the agent did before it had an ACL).
import { AclError, filterCovers, filterProblem, topicMatches } from './acl.js'

export interface AclRuleOptions {
  readonly publish?: readonly string[] | undefined
  readonly subscribe?: readonly string[] | undefined
  readonly read?: readonly string[] | undefined
  readonly deny?: readonly string[] | undefined
}

export interface ClientAclOptions {
  readonly anonymous?: AclRuleOptions | undefined
  readonly users?: readonly (AclRuleOptions & { readonly name: string })[] | undefined
  readonly groups?:
    readonly (AclRuleOptions & { readonly name: string; readonly members: readonly string[] })[] | undefined
  readonly patterns?: readonly AclRuleOptions[] | undefined
}

type Kind = 'publish' | 'subscribe' | 'read' | 'deny'
const KINDS: readonly Kind[] = ['publish', 'subscribe', 'read', 'deny']

/** The compiled rules of one client. */
export class ClientRules {
  constructor(
    private readonly pub: readonly string[],
    private readonly sub: readonly string[],
    private readonly read: readonly string[],
    private readonly deny: readonly string[],
    /** The ACL is off: everything is allowed, `$` topics too. */
    private readonly all = false,
  ) {}

  publish(topic: string): boolean {
    if (this.all) return true
    if (this.deny.some((f) => topicMatches(f, topic))) return false
    return this.pub.some((f) => topicMatches(f, topic))
  }

  subscribe(filter: string): boolean {
    if (this.all) return true
    if (this.deny.some((d) => filterCovers(filter, d) || filterCovers(d, filter))) return false
    return this.sub.some((a) => filterCovers(a, filter)) || this.read.some((r) => filtersOverlap(r, filter))
  }

  receive(topic: string): boolean {
    if (this.all) return true
    if (this.deny.some((f) => topicMatches(f, topic))) return false
    return this.sub.some((f) => topicMatches(f, topic)) || this.read.some((f) => topicMatches(f, topic))
  }
}

const ALLOW_ALL = new ClientRules([], [], [], [], true)

interface CompiledGroup {
  readonly members: readonly RegExp[]
  readonly rules: AclRuleOptions
}

export class ClientAcl {
  readonly #opts: ClientAclOptions
  readonly #groups: readonly CompiledGroup[]
  readonly #users: ReadonlyMap<string, AclRuleOptions>
  readonly enabled: boolean

  private constructor(opts: ClientAclOptions) {
    this.#opts = opts
    this.#groups = (opts.groups ?? []).map((g) => ({ members: g.members.map(globToRegExp), rules: g }))
    this.#users = new Map((opts.users ?? []).map((u) => [u.name, u]))
    this.enabled =
      opts.anonymous !== undefined ||
      this.#users.size > 0 ||
      this.#groups.length > 0 ||
      (opts.patterns ?? []).length > 0
  }

  /** An ACL that allows everything (no rules configured). */
  static off(): ClientAcl {
    return new ClientAcl({})
  }

  /** Checks every filter; throws AclError (EDGE_ERR_BROKER_ACL_INVALID) naming the first bad one. */
  static compile(opts: ClientAclOptions): ClientAcl {
    const check = (where: string, rules: AclRuleOptions): void => {
      for (const kind of KINDS) {
        for (const f of rules[kind] ?? []) {
          const problem = filterProblem(substitute(f, 'x', 'x') ?? f)
          if (problem !== undefined) throw new AclError(`${where}.${kind}: ${JSON.stringify(f)} ${problem}`)
        }
      }
    }
    if (opts.anonymous !== undefined) check('anonymous', opts.anonymous)
    ;(opts.users ?? []).forEach((u, i) => check(`users[${i}] (${u.name})`, u))
    ;(opts.groups ?? []).forEach((g, i) => check(`groups[${i}] (${g.name})`, g))
    ;(opts.patterns ?? []).forEach((p, i) => check(`patterns[${i}]`, p))
    return new ClientAcl(opts)
  }

  /** Both ACLs' rules in one (a configured ACL and an imported acl_file). */
  static merge(a: ClientAclOptions, b: ClientAclOptions): ClientAclOptions {
    const anonymous =
      a.anonymous === undefined
        ? b.anonymous
        : b.anonymous === undefined
          ? a.anonymous
          : joinRules(a.anonymous, b.anonymous)
    const users = new Map<string, AclRuleOptions & { name: string }>()
    for (const u of [...(a.users ?? []), ...(b.users ?? [])]) {
      const prev = users.get(u.name)
      users.set(u.name, prev === undefined ? u : { ...joinRules(prev, u), name: u.name })
    }
    return {
      ...(anonymous === undefined ? {} : { anonymous }),
      users: [...users.values()],
      groups: [...(a.groups ?? []), ...(b.groups ?? [])],
      patterns: [...(a.patterns ?? []), ...(b.patterns ?? [])],
    }
  }

  /**
   * The rules of a client: by user name (undefined = anonymous) and client id.
   * With the ACL off, everything is allowed.
   */
  forClient(username: string | undefined, clientId: string): ClientRules {
    if (!this.enabled) return ALLOW_ALL
    // patterns apply to anonymous clients too, except those that need %u
    if (username === undefined)
      return fromParts([this.#opts.anonymous ?? {}, ...(this.#opts.patterns ?? [])], undefined, clientId)
    const parts: AclRuleOptions[] = []
    const own = this.#users.get(username)
    if (own !== undefined) parts.push(own)
    for (const g of this.#groups) if (g.members.some((m) => m.test(username))) parts.push(g.rules)
    parts.push(...(this.#opts.patterns ?? []))
    return fromParts(parts, username, clientId)
  }
}

function fromParts(parts: readonly AclRuleOptions[], username: string | undefined, clientId: string): ClientRules {
  const out: Record<Kind, string[]> = { publish: [], subscribe: [], read: [], deny: [] }
  for (const p of parts) {
    for (const kind of KINDS) {
      for (const f of p[kind] ?? []) {
        const expanded = substitute(f, username, clientId)
        // a deny that cannot be expanded still denies its literal parts: keep it widened to be safe
        if (expanded !== undefined) out[kind].push(expanded)
        else if (kind === 'deny') out.deny.push(widen(f))
      }
    }
  }
  return new ClientRules(out.publish, out.subscribe, out.read, out.deny)
}

const UNSAFE = /[/+#]/

/** `%u`/`{id}` → username, `%c` → client id; undefined when a needed value is missing or unsafe. */
function substitute(filter: string, username: string | undefined, clientId: string | undefined): string | undefined {
  let out = filter
  if (out.includes('%u') || out.includes('{id}')) {
    if (username === undefined || username === '' || UNSAFE.test(username)) return undefined
    out = out.split('%u').join(username).split('{id}').join(username)
  }
  if (out.includes('%c')) {
    if (clientId === undefined || clientId === '' || UNSAFE.test(clientId)) return undefined
    out = out.split('%c').join(clientId)
  }
  return out
}

/** A deny whose placeholders cannot be filled denies every value of them. */
function widen(filter: string): string {
  return filter.split('%u').join('+').split('{id}').join('+').split('%c').join('+')
}

function joinRules(a: AclRuleOptions, b: AclRuleOptions): AclRuleOptions {
  return {
    publish: [...(a.publish ?? []), ...(b.publish ?? [])],
    subscribe: [...(a.subscribe ?? []), ...(b.subscribe ?? [])],
    read: [...(a.read ?? []), ...(b.read ?? [])],
    deny: [...(a.deny ?? []), ...(b.deny ?? [])],
  }
}

/** Can some topic match both filters? */
export function filtersOverlap(a: string, b: string): boolean {
  const x = a.split('/')
  const y = b.split('/')
  const dollar = (l: string | undefined) => (l ?? '').startsWith('$')
  // [MQTT-4.7.2-1]: a first-level wildcard never matches a $ topic
  if ((x[0] === '+' || x[0] === '#') && dollar(y[0])) return false
  if ((y[0] === '+' || y[0] === '#') && dollar(x[0])) return false
  for (let i = 0; ; i++) {
    const p = x[i]
    const q = y[i]
    if (p === '#' || q === '#') return true
    if (p === undefined || q === undefined) return p === q
    if (p !== '+' && q !== '+' && p !== q) return false
  }
}

/**
 * Mosquitto's `acl_file`: `topic [read|write|readwrite|deny] <topic>` lines
 * (before any `user` line: for anonymous clients), `user <name>` sections,
 * and `pattern [access] <topic>` lines for everyone, with %u and %c. `read`
 * maps to read, `write` to publish, `readwrite` to both, `deny` to deny.
 */
export function parseMosquittoAcl(text: string, where = 'acl_file'): ClientAclOptions {
  type Mutable = { publish: string[]; read: string[]; deny: string[] }
  const blank = (): Mutable => ({ publish: [], read: [], deny: [] })
  const anonymous = blank()
  const users = new Map<string, Mutable>()
  const patterns: Mutable[] = []
  let current: Mutable = anonymous
  let anonymousUsed = false
  const lines = text.split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').replace(/^\s+/, '').replace(/\s+$/, '')
    if (line === '' || line.startsWith('#')) continue
    const at = `${where} line ${i + 1}`
    const m = /^(\S+)\s+(.*)$/.exec(line)
    if (m === null) throw new AclError(`${at}: expected 'topic', 'pattern' or 'user' and a value`)
    const keyword = m[1] ?? ''
    const rest = m[2] ?? ''
    if (keyword === 'user') {
      const name = rest
      current = users.get(name) ?? blank()
      users.set(name, current)
      continue
    }
    if (keyword !== 'topic' && keyword !== 'pattern')
      throw new AclError(`${at}: unknown keyword ${JSON.stringify(keyword.slice(0, 40))}`)
    const am = /^(read|write|readwrite|deny)\s+(.+)$/.exec(rest)
    const access = am === null ? 'readwrite' : (am[1] ?? 'readwrite')
    const topic = am === null ? rest : (am[2] ?? '')
    const problem = filterProblem(topic.split('%u').join('x').split('%c').join('x'))
    if (problem !== undefined) throw new AclError(`${at}: ${JSON.stringify(topic.slice(0, 200))} ${problem}`)
    let target: Mutable
    if (keyword === 'pattern') {
      target = blank()
      patterns.push(target)
    } else {
      target = current
      if (current === anonymous) anonymousUsed = true
    }
    if (access === 'read' || access === 'readwrite') target.read.push(topic)
    if (access === 'write' || access === 'readwrite') target.publish.push(topic)
    if (access === 'deny') target.deny.push(topic)
  }
  return {
    ...(anonymousUsed ? { anonymous } : {}),
    users: [...users].map(([name, r]) => ({ name, ...r })),
    patterns,
  }
}

function globToRegExp(pattern: string): RegExp {
  const body = pattern
    .split('*')
    .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*')
  return new RegExp(`^${body}$`, 's')
}
