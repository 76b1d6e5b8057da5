// One small GET for what acme-client does not do (the directory check, ARI),
// with the same extra trust as the ACME requests.
import { request as httpsRequest } from 'node:https'
import { request as httpRequest } from 'node:http'
import { AcmeError } from './errors.js'

export interface JsonResponse {
  readonly status: number
  readonly body: unknown
  readonly headers: Readonly<Record<string, string | string[] | undefined>>
}

export function getJson(url: string, o: { ca?: string | undefined; timeoutMs: number }): Promise<JsonResponse> {
  return new Promise<JsonResponse>((resolve, reject) => {
    const u = new URL(url)
    const fail = (err: Error): void =>
      reject(new AcmeError('EDGE_ERR_ACME_UNREACHABLE', `cannot reach ${u.origin}: ${err.message}`, { cause: err }))
    const opts = {
      method: 'GET',
      timeout: o.timeoutMs,
      headers: { accept: 'application/json' },
      ...(o.ca === undefined ? {} : { ca: o.ca }),
    }
    const req = (u.protocol === 'http:' ? httpRequest : httpsRequest)(u, opts, (res) => {
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (c: Buffer) => {
        size += c.length
        if (size > 1_048_576) req.destroy(new Error('response larger than 1 MiB'))
        else chunks.push(c)
      })
      res.on('error', fail)
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let body: unknown
        try {
          body = JSON.parse(text)
        } catch {
          body = undefined
        }
        resolve({ status: res.statusCode ?? 0, body, headers: res.headers })
      })
    })
    req.on('timeout', () => req.destroy(new Error(`no answer within ${o.timeoutMs} ms`)))
    req.on('error', fail)
    req.end()
  })
}
