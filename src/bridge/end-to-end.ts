// Which MQTT 5 properties travel with a message through the agent, in both
// directions: those that belong to the message. Topic Alias and Subscription
// Identifier belong to one connection (hop-by-hop) and never cross.
import type { IPublishPacket } from 'mqtt-packet'

type PublishProperties = NonNullable<IPublishPacket['properties']>

/** The end-to-end properties of a PUBLISH. */
export type EndToEndProperties = Pick<
  PublishProperties,
  | 'payloadFormatIndicator'
  | 'messageExpiryInterval'
  | 'contentType'
  | 'responseTopic'
  | 'correlationData'
  | 'userProperties'
>

/**
 * The end-to-end properties of `p`, or undefined when it has none. Message
 * Expiry Interval only with `withExpiry` (capture turns it into the row's
 * absolute expiry instead).
 */
export function endToEndProperties(
  p: Readonly<PublishProperties>,
  withExpiry: boolean,
): EndToEndProperties | undefined {
  const out: { -readonly [K in keyof EndToEndProperties]: EndToEndProperties[K] } = {}
  if (p.payloadFormatIndicator !== undefined) out.payloadFormatIndicator = p.payloadFormatIndicator
  if (withExpiry && p.messageExpiryInterval !== undefined) out.messageExpiryInterval = p.messageExpiryInterval
  if (p.contentType !== undefined) out.contentType = p.contentType
  if (p.responseTopic !== undefined) out.responseTopic = p.responseTopic
  if (p.correlationData !== undefined) out.correlationData = p.correlationData
  if (p.userProperties !== undefined) out.userProperties = p.userProperties
  return Object.keys(out).length === 0 ? undefined : out
}
