// Device identities: the string that is at once the certificate CN, the MQTT
// client id and the `{id}` of the device's topic space. It must therefore be
// usable as exactly one topic level (CVE-2017-7650: identities with + or #
// let a certificate holder widen its ACL pattern).

export const MAX_DEVICE_ID_BYTES = 128

/** Why `id` cannot be a device identity, or undefined if it can. */
export function deviceIdProblem(id: string, maxBytes = MAX_DEVICE_ID_BYTES): string | undefined {
  if (id.length === 0) return 'must not be empty'
  if (Buffer.from(id, 'utf8').toString('utf8') !== id) return 'must be well-formed UTF-8'
  if (Buffer.byteLength(id) > maxBytes) return `must be at most ${maxBytes} bytes`
  if (/[/+#]/.test(id)) return "must not contain '/', '+' or '#' (it names one topic level)"

  if (/[\u0000-\u001f\u007f]/.test(id)) return 'must not contain control characters or NUL'
  if (id.trim() !== id) return 'must not start or end with whitespace'
  return undefined
}
