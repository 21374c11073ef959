// Package upload is the core of sending firmware images to ESP32 and
// ESP8266 devices and telling what happened, without drawing anything.
//
// A Transport moves one image to one device and returns nil once the
// device accepted it, or a *DeviceError that says, in one class, why not
// and with the device's own words. Each protocol family's client lives in
// a package of its own that implements Transport and imports only this
// core: upload/rawhttp (HTTP POST of the raw image, the seed and OTS
// firmware), upload/espota (Arduino's espota), upload/form (the Arduino
// upload form) and upload/elegantota (ElegantOTA v3); the HTTP ones share
// upload/internal/post. What the runner must know of a family's devices,
// its transport reports as Traits (and, where a protocol's families differ
// per device, as a Screener's refusal), and a failure after which nothing
// may be sent again says so in DeviceError.NoRetry; so nothing here names
// a protocol but the detection vocabulary (Protocol, the probe).
// cmd/ builds the transports and hands them to the runner in
// Options.Transports. The wire facts of each family are in
// docs/protocols/<family>.md.
//
// The core holds what every family shares: the fleet runner (parallelism,
// retries, canary, failure budget, pre-flight), the protocol probe,
// verification and its pure verdict (Decide), the one table that
// classifies device answers (ClassifyAnswer), and the AckCounter. The
// runner emits Events; cmd/ renders them as bars, lines or NDJSON.
//
// Progress is counted in bytes the device has taken (acknowledged at the TCP
// level), not bytes the local socket buffered, so the erase stall of a real
// device shows at 0 % instead of a bar that jumps: see AckCounter.
package upload
