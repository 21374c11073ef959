package sim

// The personalities this simulator assembles, in documentation order: a
// device family adds its firmwares here, one line per family.
func init() {
	Register(SeedFirmware, OTSFirmware)
	Register(ArduinoFirmware, ESP8266Firmware)
}
