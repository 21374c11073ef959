package image

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"hash"
	"hash/crc32"
)

// parseSignature finds what follows the image (research §3.3): an SBv2
// sector at the next 4 KB boundary, an SBv1 signature (ESP32) right after
// the image, or nothing. hs holds the SHA-256 state over data[:img.ChecksumOffset+1];
// it is continued rather than restarted so the file is hashed once.
func parseSignature(img *Image, data []byte, hs hash.Hash) {
	n := len(data)
	end := img.Len
	img.Signature = Signature{Scheme: SigNone, End: end}
	sigOff := (end + sigSectorLen - 1) &^ (sigSectorLen - 1)
	if sigOff <= n-sigSectorLen && data[sigOff] == 0xE7 {
		hs.Write(data[img.ChecksumOffset+1 : sigOff])
		var sum [32]byte
		hs.Sum(sum[:0])
		img.Signature = Signature{Scheme: SigV2, Offset: sigOff, End: sigOff + sigSectorLen}
		sector := data[sigOff : sigOff+sigSectorLen]
		var sum384 []byte // computed only when a P-384 block is present
		for i := 0; i < 3; i++ {
			blk := sector[i*sigBlockLen : (i+1)*sigBlockLen]
			sb, ok := parseSigBlock(blk)
			if !ok {
				break
			}
			if len(sb.Digest) == 48 {
				if sum384 == nil {
					s := sha512.Sum384(data[:sigOff])
					sum384 = s[:]
				}
				sb.DigestOK = bytes.Equal(sb.Digest, sum384)
			} else {
				sb.DigestOK = bytes.Equal(sb.Digest, sum[:])
			}
			img.Signature.Blocks = append(img.Signature.Blocks, sb)
		}
		return
	}
	if img.Header.ChipID == ChipESP32 && end <= n-sbv1Len && binary.LittleEndian.Uint32(data[end:]) == 0 {
		sig := data[end+4 : end+sbv1Len]
		if !allFF(sig) && !allZero(sig) {
			img.Signature = Signature{Scheme: SigV1, Offset: end, End: end + sbv1Len}
			if n-img.Signature.End <= sbv1Slack {
				// elf2image --secure-pad leaves up to 12 bytes of slack.
				img.Signature.End = n
			}
		}
	}
}

// parseSigBlock decodes one SBv2 block; ok is false when it is not a valid
// block (magic, version, CRC-32 of bytes 0..1195).
func parseSigBlock(blk []byte) (SigBlock, bool) {
	if blk[0] != 0xE7 || (blk[1] != 2 && blk[1] != 3) {
		return SigBlock{}, false
	}
	crc := binary.LittleEndian.Uint32(blk[1196:])
	if crc32.ChecksumIEEE(blk[:1196]) != crc {
		return SigBlock{}, false
	}
	sb := SigBlock{Version: blk[1], CRC: crc}
	switch {
	case blk[1] == 2:
		sb.Scheme = "RSA-3072"
		sb.Digest = bytes.Clone(blk[4:36])
		sb.KeyDigest = sha256.Sum256(blk[36:812])
	case blk[2] == 1 && blk[52] == 3:
		sb.Scheme = "ECDSA-P384"
		sb.Digest = bytes.Clone(blk[4:52])
		sb.KeyDigest = sha256.Sum256(blk[52:149])
	case blk[2] == 0 && (blk[36] == 1 || blk[36] == 2):
		sb.Scheme = "ECDSA-P256"
		if blk[36] == 1 {
			sb.Scheme = "ECDSA-P192"
		}
		sb.Digest = bytes.Clone(blk[4:36])
		sb.KeyDigest = sha256.Sum256(blk[36:101])
	default:
		return SigBlock{}, false
	}
	return sb, true
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
