package core

import (
	"fmt"

	"github.com/ots-ota/ots-ota/image"
)

// Image builds a valid application image for chip ("esp32s3", "esp32", …)
// with the given project and version, about size bytes (0 = small), as the
// simulated devices accept it. Equal arguments give equal bytes. This is
// what `ots-ota sim image` writes. For "esp8266" it is an esp8266/Arduino
// sketch image, for the esp8266 personality.
func Image(chip, project, version string, size int) ([]byte, error) {
	return ImageWith(image.BuildOptions{Project: project, Version: version, Size: size}, chip)
}

// ImageWith is Image with every build option (secure version, no digest,
// seed, IDF version …); o.Chip is replaced by chip.
func ImageWith(o image.BuildOptions, chip string) ([]byte, error) {
	if chip == "" {
		chip = "esp32s3"
	}
	c, ok := image.ChipByName(chip)
	if !ok {
		return nil, fmt.Errorf("sim: image: unknown chip %q", chip)
	}
	o.Chip = c
	if o.Project == "" {
		o.Project = "ots-fw-main"
	}
	b, err := image.Build(o)
	if err != nil {
		return nil, fmt.Errorf("sim: image: %w", err)
	}
	return b, nil
}
