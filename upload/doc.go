// Package upload sends firmware images to ESP32 devices and tells what
// happened, without drawing anything.
//
// A Transport (HTTP POST /update, or Arduino's espota) moves one image to one
// device and returns nil once the device accepted it, or a *DeviceError that
// says, in one class, why not and with the device's own words. The fleet
// runner (parallelism, retries, canary, failure budget, verification) sits on
// top and emits Events; cmd/ renders them as bars, lines or NDJSON.
//
// Progress is counted in bytes the device has taken (acknowledged at the TCP
// level), not bytes the local socket buffered, so the erase stall of a real
// device shows at 0 % instead of a bar that jumps: see AckCounter.
package upload
