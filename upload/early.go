package upload

import "errors"

// ErrEarlyAnswer marks a success answer that came before the device had
// taken the whole image.
var ErrEarlyAnswer = errors.New("the device answered before it had taken the whole image")
