// Package espota is the client of Arduino's espota protocol (ArduinoOTA on
// arduino-esp32 and esp8266/Arduino): a UDP invitation, an optional MD5 or
// PBKDF2 challenge, then the device connects back over TCP to a Listener
// and takes the image. Transport implements upload.Transport and reports
// the family's upload.Traits (no chip check, Arduino partitions, a version
// in mDNS TXT at most, reached by a datagram). The wire facts, with their
// sources, are in docs/protocols/espota.md.
package espota
