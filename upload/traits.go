package upload

// ArduinoDefaultSlot is the app slot of arduino-esp32's default partition
// scheme (tools/partitions/default.csv: app0/app1 of 0x140000).
const ArduinoDefaultSlot = 0x140000
