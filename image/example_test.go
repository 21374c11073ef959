package image_test

import (
	"fmt"
	"time"

	"github.com/ots-ota/ots-ota/image"
)

func ExampleValidate() {
	data, err := image.Build(image.BuildOptions{
		Chip: image.ChipESP32S3, Project: "thermostat", Version: "1.4.0",
		Built: time.Date(2025, time.May, 1, 12, 0, 0, 0, time.UTC), Size: 512 << 10,
	})
	if err != nil {
		panic(err)
	}
	r := image.Validate(data, image.Policy{Chip: image.ChipESP32C3, ChipSet: true, SlotSize: 0x1E0000})
	fmt.Println(r.Image.Kind, r.Image.Header.ChipID, r.Image.App.ProjectName, r.Image.App.Date)
	for _, f := range r.Errors {
		fmt.Printf("%s: %s\n", f.Code, f.Message)
	}
	// Output:
	// app esp32s3 thermostat May  1 2025
	// chip_mismatch: image is built for ESP32-S3, the device is ESP32-C3
}

func ExampleParse() {
	_, err := image.Parse([]byte("\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xf3\x00"))
	if fe, ok := err.(*image.FileError); ok {
		fmt.Println(fe.Kind, "|", fe.Reason)
		fmt.Println(fe.Hint)
	}
	// Output:
	// elf | this is a RISC-V ELF file (ESP32-C/H/P series), the linker output, not a flashable application image
	// upload .pio/build/<env>/firmware.bin, not firmware.elf (ESP-IDF: build/<project>.bin; Arduino: Sketch > Export Compiled Binary)
}
