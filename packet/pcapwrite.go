package packet

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"time"
)

// writerSnapLen is the snap length written into file headers: libpcap's
// MAXIMUM_SNAPLEN, which every reader accepts.
const writerSnapLen = 262144

// CaptureWriter writes frames to a classic pcap file (little-endian,
// version 2.4) of one link type. It is not safe for concurrent use.
//
// The headers are written here rather than with pcapgo.Writer because
// pcapgo takes the link type as a uint8 layers.LinkType, which cannot
// express LINKTYPE_LINUX_SLL2 (276), and stamps frames that have a zero
// timestamp with the current time, which would make generated test
// captures differ from run to run.
type CaptureWriter struct {
	path  string
	f     *os.File // nil when writing to a caller's io.Writer
	w     *bufio.Writer
	nanos bool
	rec   [16]byte
}

// CreateCapture creates (or truncates) path and writes a pcap file header
// for linkType with nanosecond timestamps.
func CreateCapture(path string, linkType uint16) (*CaptureWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err // *PathError names the file
	}
	w, err := newCaptureWriter(f, path, linkType, true)
	if err != nil {
		f.Close()
		return nil, err
	}
	w.f = f
	return w, nil
}

// NewCaptureWriter writes a pcap file header for linkType to w and returns
// a CaptureWriter that appends frames to it, with nanosecond or, when nanos
// is false, microsecond timestamps (the original format, which some old
// tools require). Close flushes but does not close w.
func NewCaptureWriter(w io.Writer, linkType uint16, nanos bool) (*CaptureWriter, error) {
	return newCaptureWriter(w, "", linkType, nanos)
}

func newCaptureWriter(w io.Writer, path string, linkType uint16, nanos bool) (*CaptureWriter, error) {
	cw := &CaptureWriter{path: path, w: bufio.NewWriterSize(w, 64<<10), nanos: nanos}
	var h [24]byte
	magic := uint32(pcapMagicMicroLE)
	if nanos {
		magic = pcapMagicNanoLE
	}
	binary.LittleEndian.PutUint32(h[0:4], magic)
	binary.LittleEndian.PutUint16(h[4:6], 2) // version 2.4
	binary.LittleEndian.PutUint16(h[6:8], 4)
	// h[8:16]: time zone offset and accuracy, always 0
	binary.LittleEndian.PutUint32(h[16:20], writerSnapLen)
	binary.LittleEndian.PutUint32(h[20:24], uint32(linkType))
	if _, err := cw.w.Write(h[:]); err != nil {
		return nil, cw.wrap(err)
	}
	return cw, nil
}

func (w *CaptureWriter) wrap(err error) error {
	if w.path == "" {
		return fmt.Errorf("pcap writer: %w", err)
	}
	return fmt.Errorf("%s: %w", w.path, err)
}

// WritePacket appends one frame captured at ts. The frame is copied before
// WritePacket returns. A zero ts is written as the epoch.
func (w *CaptureWriter) WritePacket(ts time.Time, frame []byte) error {
	return w.WritePacketLen(ts, frame, len(frame))
}

// WritePacketLen appends a frame that was cut from a wireLen-byte frame
// on the wire, keeping a snap-length truncation visible in the output
// (CaptureReader.WireLen gives wireLen for frames read from a capture).
func (w *CaptureWriter) WritePacketLen(ts time.Time, frame []byte, wireLen int) error {
	if len(frame) > writerSnapLen {
		return w.wrap(fmt.Errorf("frame of %d bytes exceeds the snap length %d", len(frame), writerSnapLen))
	}
	wireLen = max(wireLen, len(frame))
	if ts.IsZero() {
		ts = time.Unix(0, 0)
	}
	sec := ts.Unix()
	if sec < 0 || sec > 1<<32-1 {
		return w.wrap(fmt.Errorf("timestamp %v is outside the pcap range (1970..2106)", ts))
	}
	frac := ts.Nanosecond()
	if !w.nanos {
		frac /= 1000
	}
	binary.LittleEndian.PutUint32(w.rec[0:4], uint32(sec))
	binary.LittleEndian.PutUint32(w.rec[4:8], uint32(frac))
	binary.LittleEndian.PutUint32(w.rec[8:12], uint32(len(frame)))
	binary.LittleEndian.PutUint32(w.rec[12:16], uint32(wireLen))
	if _, err := w.w.Write(w.rec[:]); err != nil {
		return w.wrap(err)
	}
	if _, err := w.w.Write(frame); err != nil {
		return w.wrap(err)
	}
	return nil
}

// Flush writes buffered frames to the underlying file or writer.
func (w *CaptureWriter) Flush() error {
	if err := w.w.Flush(); err != nil {
		return w.wrap(err)
	}
	return nil
}

// Close flushes buffered frames and closes the file CreateCapture opened.
func (w *CaptureWriter) Close() error {
	err := w.w.Flush()
	if w.f != nil {
		if cerr := w.f.Close(); err == nil {
			err = cerr
		}
		w.f = nil
	}
	if err != nil {
		return w.wrap(err)
	}
	return nil
}
