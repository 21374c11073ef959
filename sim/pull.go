package sim

// TasmotaMQTT is the pulling Tasmota (sim/tasmotamqtt): devices without
// addresses of their own that connect to the user's MQTT broker and fetch
// their updates themselves. It serves nothing, so it is no personality of
// the device core (Personalities does not list it): the CLI starts it with
// tasmotamqtt.Start.
const TasmotaMQTT Personality = "tasmota-mqtt"

// ESPHomePull is the pulling ESPHome node (sim/esphomepull): nodes built
// with update: platform: http_request and MQTT, which poll a manifest at a
// URL fixed when they were built and install on INSTALL. Like TasmotaMQTT
// it serves nothing: the CLI starts it with esphomepull.Start.
const ESPHomePull Personality = "esphome-pull"

// PullPersonalities lists the personalities whose devices pull their
// updates.
func PullPersonalities() []Personality { return []Personality{TasmotaMQTT, ESPHomePull} }
