module github.com/ots-ota/ots-ota

go 1.26
