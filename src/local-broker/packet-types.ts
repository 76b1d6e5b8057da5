// MQTT control packet types: the high nibble of a fixed header's first byte
// (MQTT 3.1.1 §2.2.1, MQTT 5 §2.1.2; AUTH is MQTT 5 only).
export const CONNECT = 1
export const CONNACK = 2
export const PUBLISH = 3
export const PUBACK = 4
export const PUBREC = 5
export const PUBREL = 6
export const PUBCOMP = 7
export const SUBSCRIBE = 8
export const SUBACK = 9
export const UNSUBSCRIBE = 10
export const UNSUBACK = 11
export const PINGREQ = 12
export const PINGRESP = 13
export const DISCONNECT = 14
export const AUTH = 15
