// Package upload is the core of sending firmware images to ESP32 and
// ESP8266 devices and telling what happened, without drawing anything.
//
// A Transport moves one image to one device and returns nil once the
// device accepted it, or a *DeviceError that says, in one class, why not
// and with the device's own words. Each protocol family's client lives in
// a package of its own that implements Transport and imports only this
// core: upload/rawhttp (HTTP POST of the raw image, the seed and OTS
// firmware), upload/espota (Arduino's espota), upload/form (the Arduino
// upload form), upload/elegantota (ElegantOTA v3), upload/wled (WLED's
// update page, after its release check) and upload/tasmota (Tasmota, by
// file or by URL); the HTTP ones share upload/internal/post. What the
// runner must know of a family's devices, its transport reports as Traits
// (and, where a protocol's families differ
// per device, as a Screener's refusal); a failure after which nothing may
// be sent again says so in DeviceError.NoRetry. A target's protocol comes
// from the target, from Options.Probe (cmd/ hands it the detection table,
// package detect, through ChooseProtocol) or, with no probe, from the one
// transport configured: the runner names no protocol. Protocol names
// remain in the vocabulary (Protocol and its values, shared with
// detection), in the one table of device answers (ClassifyAnswer knows
// HTTP statuses, espota's texts and the web uploaders' words) and where
// the observer reads devinfo's facts. cmd/ builds the transports and hands
// them to the runner in Options.Transports. The wire facts of each family
// are in docs/protocols/<family>.md.
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
