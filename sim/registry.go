package sim

import (
	"github.com/ots-ota/ots-ota/sim/core"
	"github.com/ots-ota/ots-ota/sim/elegantota"
	"github.com/ots-ota/ots-ota/sim/esphome"
	"github.com/ots-ota/ots-ota/sim/espota"
	"github.com/ots-ota/ots-ota/sim/form"
	"github.com/ots-ota/ots-ota/sim/rawhttp"
	"github.com/ots-ota/ots-ota/sim/tasmota"
	"github.com/ots-ota/ots-ota/sim/wled"
)

// The personalities this simulator assembles, in documentation order: a
// device family is one package on sim/core and one line here.
func init() {
	core.Register(rawhttp.SeedFirmware, rawhttp.OTSFirmware)
	core.Register(espota.ArduinoFirmware, espota.ESP8266Firmware)
	core.Register(form.HTTPUpdateServerFirmware, form.ESPEasyFirmware)
	core.Register(elegantota.Firmware)
	core.Register(esphome.ESP32Firmware, esphome.ESP8266Firmware)
	core.Register(wled.Firmware, tasmota.Firmware)
}
