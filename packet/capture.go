package packet

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// File magics, as the first four bytes of a file read little-endian.
const (
	pcapMagicMicroLE = 0xa1b2c3d4
	pcapMagicMicroBE = 0xd4c3b2a1
	pcapMagicNanoLE  = 0xa1b23c4d
	pcapMagicNanoBE  = 0x4d3cb2a1
	pcapngSHBType    = 0x0a0d0d0a // the same in both byte orders
	pcapngBOMagic    = 0x1a2b3c4d
)

// Frame size bounds. libpcap accepts frames up to 262144 bytes (its
// MAXIMUM_SNAPLEN) even when a file's header claims less, so we do too;
// anything above maxFrameLen is a corrupt length field, refused before a
// buffer of that size is allocated.
const (
	minSnapLen  = 262144
	maxFrameLen = 16 << 20
)

// CaptureReader reads the frames of a pcap or pcapng file and decodes them
// into Views. It is not safe for concurrent use.
type CaptureReader struct {
	path   string
	f      *os.File
	gz     *gzip.Reader
	pcap   *pcapgo.Reader
	ng     *pcapgo.NgReader
	ngLink *ngLinkTypes
	// section counts the pcapng section headers after the first one, which
	// pcapgo reports through its section-end callback.
	section int

	fileLinkType uint16 // classic pcap: the header's link type
	linkType     uint16 // of the last frame
	decoders     []linkDecoder
	data         []byte
	wireLen      int
	frame        int
	err          error // sticky: the stream cannot be resynchronised
}

// linkDecoder is a Decoder for one link type, nil when that link type is not
// supported.
type linkDecoder struct {
	linkType uint16
	dec      *Decoder
}

// OpenCapture opens a capture file, classic pcap (either byte order,
// microsecond or nanosecond timestamps) or pcapng, optionally gzip
// compressed, telling them apart by their magic numbers. Frames of a link
// type that no Decoder supports are returned with ClassUnsupportedLink.
func OpenCapture(path string) (*CaptureReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err // *PathError names the file
	}
	r := &CaptureReader{path: path, f: f}
	if err := r.openSafe(); err != nil {
		r.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// openSafe is open with pcapgo's panics on corrupt input (it divides by
// a timestamp resolution read from the file, for one) turned into errors.
func (r *CaptureReader) openSafe() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("corrupt file (%v)", p)
		}
	}()
	return r.open()
}

func (r *CaptureReader) open() error {
	br := bufio.NewReaderSize(r.f, 64<<10)
	magic, err := br.Peek(4)
	if err != nil {
		return fmt.Errorf("not a capture file: %w", noEOF(err))
	}
	if magic[0] == 0x1f && magic[1] == 0x8b {
		if r.gz, err = gzip.NewReader(br); err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		br = bufio.NewReaderSize(r.gz, 64<<10)
		if magic, err = br.Peek(4); err != nil {
			return fmt.Errorf("not a capture file: %w", noEOF(err))
		}
	}
	switch binary.LittleEndian.Uint32(magic) {
	case pcapMagicMicroLE, pcapMagicMicroBE, pcapMagicNanoLE, pcapMagicNanoBE:
		return r.openPcap(br)
	case pcapngSHBType:
		return r.openPcapng(br)
	}
	return fmt.Errorf("not a pcap or pcapng file (magic %#08x)", binary.LittleEndian.Uint32(magic))
}

func (r *CaptureReader) openPcap(br *bufio.Reader) error {
	hdr, err := br.Peek(24)
	if err != nil {
		return fmt.Errorf("pcap file header: %w", noEOF(err))
	}
	// pcapgo keeps the link type as a uint8 layers.LinkType, which cannot
	// hold LINKTYPE_LINUX_SLL2 (276): read it from the header ourselves.
	// Its low 16 bits are the link type; the high bits carry FCS flags.
	order := binary.ByteOrder(binary.LittleEndian)
	if m := binary.LittleEndian.Uint32(hdr); m == pcapMagicMicroBE || m == pcapMagicNanoBE {
		order = binary.BigEndian
	}
	r.fileLinkType = uint16(order.Uint32(hdr[20:24]))
	r.linkType = r.fileLinkType
	// br is a *bufio.Reader of at least 4096 bytes, so pcapgo reads from
	// it directly instead of stacking another buffer.
	pr, err := pcapgo.NewReader(br)
	if err != nil {
		return fmt.Errorf("pcap: %w", err)
	}
	snap := pr.Snaplen()
	snap = max(snap, minSnapLen)
	snap = min(snap, maxFrameLen)
	pr.SetSnaplen(snap)
	r.pcap = pr
	return nil
}

func (r *CaptureReader) openPcapng(br *bufio.Reader) error {
	r.ngLink = &ngLinkTypes{r: br}
	opts := pcapgo.NgReaderOptions{
		WantMixedLinkType: true,
		SectionEndCallback: func([]pcapgo.NgInterface, pcapgo.NgSectionInfo) {
			r.section++
		},
	}
	nr, err := pcapgo.NewNgReader(r.ngLink, opts)
	if err != nil {
		return fmt.Errorf("pcapng: %w", noEOF(err))
	}
	r.ng = nr
	if lts := r.ngLink.sections; len(lts) > 0 && len(lts[0]) > 0 {
		r.linkType = lts[0][0]
	}
	return nil
}

// noEOF turns a bare io.EOF, which callers take for "no more frames", into
// io.ErrUnexpectedEOF where the file is cut inside a header.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Next reads the next frame, decodes it into v (v.Timestamp is the capture
// time) and returns its frame number, counting from 1 as Wireshark does. At
// the end of the file it returns io.EOF. The frame's bytes, which v aliases,
// live in a buffer the reader owns: the caller may modify them (DecTTL)
// and they stay valid until the next call of Next. After an error other
// than io.EOF every later call returns the same error.
func (r *CaptureReader) Next(v *View) (frame int, err error) {
	if r.err != nil {
		return 0, r.err
	}
	defer func() {
		// pcapgo panics on some corrupt files; report them like any
		// other corruption.
		if p := recover(); p != nil {
			r.data = nil
			r.err = fmt.Errorf("%s: frame %d: corrupt file (%v)", r.path, r.frame+1, p)
			frame, err = 0, r.err
		}
	}()
	var (
		data []byte
		ci   gopacket.CaptureInfo
	)
	if r.pcap != nil {
		data, ci, err = r.pcap.ZeroCopyReadPacketData()
	} else {
		data, ci, err = r.ng.ZeroCopyReadPacketData()
	}
	if err != nil {
		r.data = nil
		if err == io.EOF {
			return 0, io.EOF
		}
		if err == io.ErrUnexpectedEOF {
			err = errors.New("file ends inside a frame")
		}
		r.err = fmt.Errorf("%s: frame %d: %w", r.path, r.frame+1, err)
		return 0, r.err
	}
	r.frame++
	r.data = data
	r.wireLen = ci.Length
	r.linkType = r.fileLinkType
	if r.ng != nil {
		r.linkType = r.ngLinkType(ci)
	}
	if d := r.decoder(r.linkType); d != nil {
		d.Decode(data, v)
	} else {
		v.Reset()
		v.LinkType = r.linkType
		v.Class = ClassUnsupportedLink
	}
	v.Timestamp = ci.Timestamp
	return r.frame, nil
}

// ngLinkType is the full 16-bit link type of a pcapng frame's interface.
func (r *CaptureReader) ngLinkType(ci gopacket.CaptureInfo) uint16 {
	if lt, ok := r.ngLink.lookup(r.section, ci.InterfaceIndex); ok {
		return lt
	}
	// Not reached for files pcapgo accepts; fall back to pcapgo's value,
	// which is right for every link type below 256.
	if len(ci.AncillaryData) > 0 {
		if lt, ok := ci.AncillaryData[0].(layers.LinkType); ok {
			return uint16(lt)
		}
	}
	return 0
}

// decoder returns the Decoder for linkType, creating it on first use, or
// nil when the link type is unsupported.
func (r *CaptureReader) decoder(linkType uint16) *Decoder {
	for i := range r.decoders {
		if r.decoders[i].linkType == linkType {
			return r.decoders[i].dec
		}
	}
	d, err := NewDecoder(linkType)
	if err != nil {
		d = nil
	}
	r.decoders = append(r.decoders, linkDecoder{linkType, d})
	return d
}

// Data returns the raw frame (link header included) read by the last
// successful Next, valid until the next call of Next.
func (r *CaptureReader) Data() []byte { return r.data }

// WireLen returns the original length on the wire of the last frame, which
// exceeds len(Data()) when the capture was cut at a snap length.
func (r *CaptureReader) WireLen() int { return r.wireLen }

// LinkType returns the link type of the last frame read. Before the first
// Next it is the file's link type (pcap) or the first interface's (pcapng;
// 0 if none has been seen yet).
func (r *CaptureReader) LinkType() uint16 { return r.linkType }

// Path returns the file name the reader was opened with.
func (r *CaptureReader) Path() string { return r.path }

// Close closes the file.
func (r *CaptureReader) Close() error {
	if r.gz != nil {
		r.gz.Close()
	}
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("%s: %w", r.path, err)
	}
	return nil
}

// ngLinkTypes sits between the file and pcapgo's NgReader and watches the
// pcapng block stream go by. It does two things pcapgo does not:
//
//   - It records each interface's link type as the full 16-bit value of the
//     Interface Description Block; pcapgo (v1.1.19) stores it as a uint8,
//     which turns LINKTYPE_LINUX_SLL2 (276) into 20.
//   - It refuses packet blocks whose captured length is larger than the
//     block or than maxFrameLen, before pcapgo allocates a buffer of that
//     size: it withholds the last byte of such a header and returns an
//     error, which pcapgo then reports.
//
// Blocks are framed as type (4) | total length (4) | body | total length
// (4), in the byte order of the section's header block.
type ngLinkTypes struct {
	r        io.Reader
	sections [][]uint16 // link types by section, then interface id
	snaps    []uint32   // snap lengths of the current section's interfaces

	hdr  [28]byte // the first bytes of the current block
	nhdr int      // how many of them are in hdr
	need int      // how many of them to collect for this block type
	skip uint64   // bytes of the current block still to pass over
	big  bool
	err  error
}

// pcapng block types.
const (
	ngBlockIDB = 1
	ngBlockPB  = 2 // obsolete Packet Block
	ngBlockSPB = 3
	ngBlockEPB = 6
)

var errNgBlockLength = errors.New("pcapng: block length out of range")

func (t *ngLinkTypes) Read(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	n, err := t.r.Read(p)
	if good, ferr := t.feed(p[:n]); ferr != nil {
		t.err = ferr
		return good, ferr
	}
	return n, err
}

// lookup returns the link type of interface iface in section sec.
func (t *ngLinkTypes) lookup(sec, iface int) (uint16, bool) {
	if sec < 0 || sec >= len(t.sections) || iface < 0 || iface >= len(t.sections[sec]) {
		return 0, false
	}
	return t.sections[sec][iface], true
}

func (t *ngLinkTypes) u16(b []byte) uint16 {
	if t.big {
		return binary.BigEndian.Uint16(b)
	}
	return binary.LittleEndian.Uint16(b)
}

func (t *ngLinkTypes) u32(b []byte) uint32 {
	if t.big {
		return binary.BigEndian.Uint32(b)
	}
	return binary.LittleEndian.Uint32(b)
}

// feed follows the block framing through b. It returns how many bytes of b
// may be passed on, and an error when a block is corrupt.
func (t *ngLinkTypes) feed(b []byte) (int, error) {
	pos := 0
	for pos < len(b) {
		if t.skip > 0 {
			k := uint64(len(b) - pos)
			k = min(k, t.skip)
			pos += int(k)
			t.skip -= k
			continue
		}
		if t.need == 0 {
			t.need = 8
		}
		k := copy(t.hdr[t.nhdr:t.need], b[pos:])
		t.nhdr += k
		pos += k
		if t.nhdr < t.need {
			return pos, nil
		}
		if err := t.header(); err != nil {
			return pos - 1, err // withhold the header's last byte
		}
	}
	return pos, nil
}

// header looks at the t.need collected header bytes. It either asks for
// more (raising t.need) or finishes the header and sets t.skip.
func (t *ngLinkTypes) header() error {
	h := t.hdr[:t.nhdr]
	typ := binary.LittleEndian.Uint32(h[0:4])
	if typ == pcapngSHBType && t.nhdr < 12 {
		t.need = 12 // the byte-order magic decides how to read the length
		return nil
	}
	if typ == pcapngSHBType {
		switch {
		case binary.BigEndian.Uint32(h[8:12]) == pcapngBOMagic:
			t.big = true
		case binary.LittleEndian.Uint32(h[8:12]) == pcapngBOMagic:
			t.big = false
		default:
			return errors.New("pcapng: bad byte-order magic")
		}
		t.sections = append(t.sections, nil)
		t.snaps = t.snaps[:0]
	} else {
		typ = t.u32(h[0:4])
	}
	length := t.u32(h[4:8])
	var want int
	switch typ {
	case ngBlockIDB:
		want = 16
	case ngBlockPB, ngBlockEPB:
		want = 28
	case ngBlockSPB:
		want = 12
	default:
		want = 8
	}
	if typ == pcapngSHBType {
		want = 12
	}
	if length < 12 || uint64(length) < uint64(want)+4 {
		return errNgBlockLength
	}
	if t.nhdr < want {
		t.need = want
		return nil
	}
	switch typ {
	case ngBlockIDB:
		if len(t.sections) == 0 {
			return errors.New("pcapng: interface block before section header")
		}
		s := len(t.sections) - 1
		t.sections[s] = append(t.sections[s], t.u16(h[8:10]))
		t.snaps = append(t.snaps, t.u32(h[12:16]))
	case ngBlockPB, ngBlockEPB:
		caplen := uint64(t.u32(h[20:24]))
		if caplen > uint64(length)-32 || caplen > maxFrameLen {
			return fmt.Errorf("pcapng: captured length %d does not fit its block", caplen)
		}
	case ngBlockSPB:
		// pcapgo reads min(original length, snap length of interface 0).
		caplen := uint64(t.u32(h[8:12]))
		if len(t.snaps) > 0 && t.snaps[0] != 0 {
			caplen = min(caplen, uint64(t.snaps[0]))
		}
		if caplen > uint64(length)-16 || caplen > maxFrameLen {
			return fmt.Errorf("pcapng: captured length %d does not fit its block", caplen)
		}
	}
	t.skip = uint64(length) - uint64(t.nhdr)
	t.nhdr, t.need = 0, 0
	return nil
}
