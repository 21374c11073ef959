// Package partition reads ESP-IDF partition tables (partitions.csv and the
// binary form) and answers how large an OTA app slot is.
package partition

// THIS FILE IS A TEMPORARY CONTRACT STUB, replaced by the partition helper.

import (
	"errors"
	"io"
)

// Entry is one partition.
type Entry struct {
	Label   string
	Type    uint8
	SubType uint8
	Offset  uint32
	Size    uint32
	Flags   uint32
}

// Table is a partition table in file order.
type Table []Entry

// ParseCSV reads an ESP-IDF partitions.csv.
func ParseCSV(r io.Reader) (Table, error) { return nil, errors.New("not implemented") }

// ParseBinary reads a binary partition table (32-byte entries, MD5 entry, end marker).
func ParseBinary(b []byte) (Table, error) { return nil, errors.New("not implemented") }

// Parse sniffs the format (binary starts AA 50) and parses either.
func Parse(b []byte) (Table, error) { return nil, errors.New("not implemented") }

// OTASlotSize is the size of the ota_N app slots; an error when there are none or they differ.
func (t Table) OTASlotSize() (int64, error) { return 0, errors.New("not implemented") }

// ParseSize reads "2M", "1536K", "0x200000" or "2097152".
func ParseSize(s string) (int64, error) { return 0, errors.New("not implemented") }
