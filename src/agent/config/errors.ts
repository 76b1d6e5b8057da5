// Config errors carry every problem found, each with where it came from
// (file:line:col, environment variable or --set flag) and the key path, so an
// operator can fix them all in one edit. Values of secret keys never appear.
export type ConfigErrorCode =
  'EDGE_ERR_CONFIG_INVALID' | 'EDGE_ERR_CONFIG_NOT_FOUND' | 'EDGE_ERR_CONFIG_UNREADABLE' | 'EDGE_ERR_CONFIG_SYNTAX'

export interface ConfigIssue {
  /** 'file.yaml:12:7', 'env EDGE_AGENT_…', '--set a.b=…' or 'defaults' */
  readonly source: string
  /** dotted key path, e.g. 'broker.listeners[0].port'; '' for the whole document */
  readonly path: string
  /** what was expected, e.g. 'must be <= 65535 (got 70000)' */
  readonly message: string
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError'
  constructor(
    readonly code: ConfigErrorCode,
    readonly issues: readonly ConfigIssue[],
    readonly file?: string,
    options?: ErrorOptions,
  ) {
    super(formatIssues(code, issues, file), options)
  }
}

function formatIssues(code: ConfigErrorCode, issues: readonly ConfigIssue[], file?: string): string {
  const head =
    code === 'EDGE_ERR_CONFIG_INVALID'
      ? `invalid config${file ? ` in ${file}` : ''} (${issues.length} problem${issues.length === 1 ? '' : 's'})`
      : 'cannot load config'
  const lines = issues.map((i) => `  ${i.source}: ${i.path ? `${i.path}: ` : ''}${i.message}`)
  return [head + ':', ...lines].join('\n')
}
