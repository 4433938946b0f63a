// vmkeep patch 6 (new file): NFC export downloads as streamOptimized VMDKs, like vCenter's.
//
// The layout follows VMware's Virtual Disk Format 5.0 ("Stream-Optimized Compressed Sparse
// Extents"): a 512-byte sparse header (KDMV, version 3, flags: valid newline test, compressed
// grains, markers; grain directory "at the end"), the embedded descriptor, one grain marker
// (lba u64, size u32, zlib data, padded to a sector) per 64 KiB grain that is not all zeros,
// in ascending order, then a grain table marker with the tables, a grain directory marker, a
// footer marker with a copy of the header pointing at the directory, and the end-of-stream
// marker. Readers only need the grain markers; the tables are there because vCenter writes
// them and a reader must skip them.

package simulator

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"io"
)

const (
	vmkeepSector      = 512
	vmkeepGrainSector = 128 // 64 KiB grains
	vmkeepGTEsPerGT   = 512
)

type vmkeepSparseHeader struct {
	Magic              [4]byte
	Version            uint32
	Flags              uint32
	Capacity           uint64
	GrainSize          uint64
	DescriptorOffset   uint64
	DescriptorSize     uint64
	NumGTEsPerGT       uint32
	RgdOffset          uint64
	GdOffset           uint64
	OverHead           uint64
	UncleanShutdown    uint8
	SingleEndLineChar  byte
	NonEndLineChar     byte
	DoubleEndLineChar1 byte
	DoubleEndLineChar2 byte
	CompressAlgorithm  uint16
}

// vmkeepStreamWriter counts sectors as it writes.
type vmkeepStreamWriter struct {
	w       io.Writer
	written int64
}

func (s *vmkeepStreamWriter) write(p []byte) error {
	n, err := s.w.Write(p)
	s.written += int64(n)
	return err
}

// pad writes zeros up to the next sector boundary.
func (s *vmkeepStreamWriter) pad() error {
	if rest := s.written % vmkeepSector; rest != 0 {
		return s.write(make([]byte, vmkeepSector-rest))
	}
	return nil
}

func (s *vmkeepStreamWriter) sector() uint64 { return uint64(s.written / vmkeepSector) }

// metadata writes a metadata marker of the given type followed by body, padded to sectors.
func (s *vmkeepStreamWriter) metadata(kind uint32, body []byte) error {
	sectors := (len(body) + vmkeepSector - 1) / vmkeepSector
	marker := make([]byte, vmkeepSector)
	binary.LittleEndian.PutUint64(marker[0:], uint64(sectors))
	binary.LittleEndian.PutUint32(marker[12:], kind)
	if err := s.write(marker); err != nil {
		return err
	}
	if len(body) == 0 {
		return nil
	}
	if err := s.write(body); err != nil {
		return err
	}
	return s.pad()
}

func vmkeepHeaderBytes(capacity uint64, descriptorSectors uint64, gd uint64) []byte {
	h := vmkeepSparseHeader{
		Version:            3,
		Flags:              1 | 1<<16 | 1<<17,
		Capacity:           capacity,
		GrainSize:          vmkeepGrainSector,
		DescriptorOffset:   1,
		DescriptorSize:     descriptorSectors,
		NumGTEsPerGT:       vmkeepGTEsPerGT,
		GdOffset:           gd,
		OverHead:           1 + descriptorSectors,
		SingleEndLineChar:  '\n',
		NonEndLineChar:     ' ',
		DoubleEndLineChar1: '\r',
		DoubleEndLineChar2: '\n',
		CompressAlgorithm:  1,
	}
	copy(h.Magic[:], "KDMV")
	var buf bytes.Buffer
	_ = binary.Write(&buf, binary.LittleEndian, h)
	out := make([]byte, vmkeepSector)
	copy(out, buf.Bytes())
	return out
}

// vmkeepWriteStreamOptimized writes the disk (size bytes, a multiple of 512) as a
// streamOptimized VMDK.
func vmkeepWriteStreamOptimized(w io.Writer, disk io.ReaderAt, size int64) error {
	if size%vmkeepSector != 0 {
		return fmt.Errorf("disk size %d is not a multiple of %d", size, vmkeepSector)
	}
	capacity := uint64(size / vmkeepSector)
	descriptor := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"+
		"createType=\"streamOptimized\"\n\n# Extent description\nRDONLY %d SPARSE \"disk.vmdk\"\n", capacity)
	descriptorSectors := uint64((len(descriptor) + vmkeepSector - 1) / vmkeepSector)
	s := &vmkeepStreamWriter{w: w}
	if err := s.write(vmkeepHeaderBytes(capacity, descriptorSectors, ^uint64(0))); err != nil {
		return err
	}
	if err := s.write([]byte(descriptor)); err != nil {
		return err
	}
	if err := s.pad(); err != nil {
		return err
	}

	grainBytes := int64(vmkeepGrainSector * vmkeepSector)
	grains := (size + grainBytes - 1) / grainBytes
	table := make([]uint32, grains)
	buf := make([]byte, grainBytes)
	var packed bytes.Buffer
	for g := int64(0); g < grains; g++ {
		n := grainBytes
		if rest := size - g*grainBytes; rest < n {
			n = rest
		}
		if _, err := disk.ReadAt(buf[:n], g*grainBytes); err != nil && err != io.EOF {
			return err
		}
		if bytes.Count(buf[:n], []byte{0}) == int(n) {
			continue
		}
		packed.Reset()
		z := zlib.NewWriter(&packed)
		_, _ = z.Write(buf[:n])
		_ = z.Close()
		table[g] = uint32(s.sector())
		head := make([]byte, 12)
		binary.LittleEndian.PutUint64(head[0:], uint64(g*vmkeepGrainSector))
		binary.LittleEndian.PutUint32(head[8:], uint32(packed.Len()))
		if err := s.write(head); err != nil {
			return err
		}
		if err := s.write(packed.Bytes()); err != nil {
			return err
		}
		if err := s.pad(); err != nil {
			return err
		}
	}

	// grain tables, padded to whole tables, then the directory pointing at them
	tables := (len(table) + vmkeepGTEsPerGT - 1) / vmkeepGTEsPerGT
	gtBody := make([]byte, tables*vmkeepGTEsPerGT*4)
	for i, sector := range table {
		binary.LittleEndian.PutUint32(gtBody[i*4:], sector)
	}
	gtStart := s.sector() + 1
	if err := s.metadata(1, gtBody); err != nil {
		return err
	}
	gdBody := make([]byte, tables*4)
	for t := 0; t < tables; t++ {
		binary.LittleEndian.PutUint32(gdBody[t*4:], uint32(gtStart)+uint32(t*vmkeepGTEsPerGT*4/vmkeepSector))
	}
	gdStart := s.sector() + 1
	if err := s.metadata(2, gdBody); err != nil {
		return err
	}
	if err := s.metadata(3, vmkeepHeaderBytes(capacity, descriptorSectors, gdStart)); err != nil {
		return err
	}
	return s.metadata(0, nil)
}
