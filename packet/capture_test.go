package packet

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

var baseTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// stamp is the capture time of the i-th test frame: sub-microsecond digits
// included, so that a lost nanosecond shows.
func stamp(i int) time.Time {
	return baseTime.Add(time.Duration(i)*1234567*time.Nanosecond + 789)
}

// readAll reads every frame of path, checking frame numbers, the reader's
// Data against the view, and that EOF stays EOF.
type readFrame struct {
	frame    int
	linkType uint16
	data     []byte
	view     View
	wireLen  int
}

func readAll(t *testing.T, path string) []readFrame {
	t.Helper()
	r, err := OpenCapture(path)
	if err != nil {
		t.Fatalf("OpenCapture: %v", err)
	}
	defer r.Close()
	var out []readFrame
	for {
		var v View
		n, err := r.Next(&v)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Next after %d frames: %v", len(out), err)
		}
		if n != len(out)+1 {
			t.Fatalf("frame number %d, want %d", n, len(out)+1)
		}
		if v.LinkType != r.LinkType() {
			t.Fatalf("frame %d: view link type %d, reader %d", n, v.LinkType, r.LinkType())
		}
		data := append([]byte(nil), r.Data()...)
		out = append(out, readFrame{n, r.LinkType(), data, v, r.WireLen()})
	}
	var v View
	if _, err := r.Next(&v); err != io.EOF {
		t.Fatalf("Next after EOF: %v", err)
	}
	return out
}

// checkFrames compares what was read with what was written, and the views
// with a direct decode of the written bytes.
func checkFrames(t *testing.T, got []readFrame, lts []uint16, frames [][]byte, times []time.Time) {
	t.Helper()
	if len(got) != len(frames) {
		t.Fatalf("read %d frames, wrote %d", len(got), len(frames))
	}
	for i, g := range got {
		if g.linkType != lts[i] {
			t.Errorf("frame %d: link type %d, want %d", i+1, g.linkType, lts[i])
		}
		if !bytes.Equal(g.data, frames[i]) {
			t.Errorf("frame %d: data %x, want %x", i+1, g.data, frames[i])
		}
		if !g.view.Timestamp.Equal(times[i]) {
			t.Errorf("frame %d: timestamp %v, want %v", i+1, g.view.Timestamp, times[i])
		}
		var want View
		mustDecoder(t, lts[i]).Decode(frames[i], &want)
		want.Timestamp = g.view.Timestamp
		if g.view.Class != want.Class || g.view.Len != want.Len || g.view.Src != want.Src ||
			g.view.SrcPort != want.SrcPort || g.view.PktType != want.PktType || len(g.view.Link) != len(want.Link) {
			t.Errorf("frame %d: view %+v, want %+v", i+1, g.view, want)
		}
	}
}

func TestCaptureRoundTripPcap(t *testing.T) {
	seeds := seedFrames(t)
	dir := t.TempDir()
	for _, lt := range []uint16{LinkTypeEthernet, LinkTypeRaw, LinkTypeLinuxSLL, LinkTypeLinuxSLL2} {
		for _, nanos := range []bool{true, false} {
			frames := seeds[lt]
			path := filepath.Join(dir, "rt.pcap")
			var w *CaptureWriter
			var f *os.File
			var err error
			if nanos {
				w, err = CreateCapture(path, lt)
			} else {
				f, err = os.Create(path)
				if err == nil {
					w, err = NewCaptureWriter(f, lt, false)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			var times []time.Time
			var lts []uint16
			for i, fr := range frames {
				if err := w.WritePacket(stamp(i), fr); err != nil {
					t.Fatal(err)
				}
				ts := stamp(i)
				if !nanos {
					ts = ts.Truncate(time.Microsecond)
				}
				times, lts = append(times, ts), append(lts, lt)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if f != nil {
				f.Close()
			}
			hdr, _ := os.ReadFile(path)
			wantMagic := uint32(pcapMagicMicroLE)
			if nanos {
				wantMagic = pcapMagicNanoLE
			}
			if m, l := binary.LittleEndian.Uint32(hdr), binary.LittleEndian.Uint32(hdr[20:]); m != wantMagic || l != uint32(lt) {
				t.Fatalf("header magic %#x link type %d, want %#x %d", m, l, wantMagic, lt)
			}
			got := readAll(t, path)
			checkFrames(t, got, lts, frames, times)
		}
	}
}

// TestCapturePcapgoReadsOurFiles checks the writer against an independent
// reader: pcapgo's own.
func TestCapturePcapgoReadsOurFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pcap")
	w, err := CreateCapture(path, LinkTypeEthernet)
	if err != nil {
		t.Fatal(err)
	}
	frame := ethTCPFrame(t)
	if err := w.WritePacketLen(stamp(1), frame[:40], len(frame)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(path)
	defer f.Close()
	pr, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	data, ci, err := pr.ReadPacketData()
	if err != nil {
		t.Fatal(err)
	}
	if pr.LinkType() != layers.LinkTypeEthernet || !bytes.Equal(data, frame[:40]) || ci.Length != len(frame) || !ci.Timestamp.Equal(stamp(1)) {
		t.Fatalf("pcapgo read link %v, %d bytes of %d at %v", pr.LinkType(), len(data), ci.Length, ci.Timestamp)
	}

	// And our reader reports the truncation.
	got := readAll(t, path)
	if len(got) != 1 || got[0].wireLen != len(frame) || got[0].view.Class != ClassTruncated {
		t.Fatalf("read back %+v", got)
	}
}

// bePcap builds a big-endian classic pcap by hand (our writer and pcapgo's
// only write little-endian).
func bePcap(magic uint32, lt uint32, frames [][]byte, times []time.Time, nanos bool) []byte {
	var b bytes.Buffer
	h := make([]byte, 24)
	binary.BigEndian.PutUint32(h[0:], magic)
	binary.BigEndian.PutUint16(h[4:], 2)
	binary.BigEndian.PutUint16(h[6:], 4)
	binary.BigEndian.PutUint32(h[16:], 65535)
	binary.BigEndian.PutUint32(h[20:], lt)
	b.Write(h)
	for i, f := range frames {
		r := make([]byte, 16)
		frac := times[i].Nanosecond()
		if !nanos {
			frac /= 1000
		}
		binary.BigEndian.PutUint32(r[0:], uint32(times[i].Unix()))
		binary.BigEndian.PutUint32(r[4:], uint32(frac))
		binary.BigEndian.PutUint32(r[8:], uint32(len(f)))
		binary.BigEndian.PutUint32(r[12:], uint32(len(f)))
		b.Write(r)
		b.Write(f)
	}
	return b.Bytes()
}

func TestCaptureBigEndianPcap(t *testing.T) {
	frames := seedFrames(t)[LinkTypeLinuxSLL2]
	dir := t.TempDir()
	for _, tc := range []struct {
		magic uint32
		nanos bool
	}{{0xa1b2c3d4, false}, {0xa1b23c4d, true}} {
		var times []time.Time
		var lts []uint16
		for i := range frames {
			ts := stamp(i)
			if !tc.nanos {
				ts = ts.Truncate(time.Microsecond)
			}
			times, lts = append(times, ts), append(lts, LinkTypeLinuxSLL2)
		}
		path := filepath.Join(dir, "be.pcap")
		// The link type's high bits carry FCS information: they must not
		// change the link type.
		if err := os.WriteFile(path, bePcap(tc.magic, 0x1000_0000|uint32(LinkTypeLinuxSLL2), frames, times, tc.nanos), 0o644); err != nil {
			t.Fatal(err)
		}
		checkFrames(t, readAll(t, path), lts, frames, times)
	}
}

// ngBlock frames a pcapng block in the given byte order.
func ngBlock(order binary.AppendByteOrder, typ uint32, body []byte) []byte {
	body = append([]byte(nil), body...)
	for len(body)%4 != 0 {
		body = append(body, 0)
	}
	n := uint32(len(body) + 12)
	b := make([]byte, 0, n)
	b = order.AppendUint32(b, typ)
	b = order.AppendUint32(b, n)
	b = append(b, body...)
	return order.AppendUint32(b, n)
}

func ngSHB(order binary.AppendByteOrder) []byte {
	body := order.AppendUint32(nil, pcapngBOMagic)
	body = order.AppendUint16(body, 1)
	body = order.AppendUint16(body, 0)
	body = order.AppendUint64(body, ^uint64(0))
	return ngBlock(order, pcapngSHBType, body)
}

func ngIDB(order binary.AppendByteOrder, lt uint16, snap uint32) []byte {
	body := order.AppendUint16(nil, lt)
	body = order.AppendUint16(body, 0)
	body = order.AppendUint32(body, snap)
	return ngBlock(order, ngBlockIDB, body) // no options: microsecond stamps
}

func ngEPB(order binary.AppendByteOrder, iface uint32, ts time.Time, caplen uint32, data []byte) []byte {
	us := uint64(ts.UnixMicro())
	body := order.AppendUint32(nil, iface)
	body = order.AppendUint32(body, uint32(us>>32))
	body = order.AppendUint32(body, uint32(us))
	body = order.AppendUint32(body, caplen)
	body = order.AppendUint32(body, uint32(len(data)))
	return ngBlock(order, ngBlockEPB, append(body, data...))
}

// patchNgLinkType rewrites the link type of the n-th interface block of a
// little-endian pcapng file: pcapgo's writer, like its reader, holds link
// types in a uint8 and cannot write 276.
func patchNgLinkType(t *testing.T, b []byte, n int, lt uint16) {
	t.Helper()
	seen := 0
	for off := 0; off+12 <= len(b); {
		typ := binary.LittleEndian.Uint32(b[off:])
		l := int(binary.LittleEndian.Uint32(b[off+4:]))
		if typ == ngBlockIDB {
			if seen == n {
				binary.LittleEndian.PutUint16(b[off+8:], lt)
				return
			}
			seen++
		}
		off += l
	}
	t.Fatalf("no interface block %d", n)
}

func TestCapturePcapngMixedLinkTypes(t *testing.T) {
	seeds := seedFrames(t)
	// Section 1: pcapgo's writer, interfaces Ethernet, raw IP, SLL2.
	var sec1 bytes.Buffer
	intf := pcapgo.DefaultNgInterface
	intf.LinkType = layers.LinkTypeEthernet
	nw, err := pcapgo.NewNgWriterInterface(&sec1, intf, pcapgo.DefaultNgWriterOptions)
	if err != nil {
		t.Fatal(err)
	}
	for _, lt := range []uint16{LinkTypeRaw, LinkTypeLinuxSLL2} {
		intf.LinkType = layers.LinkType(lt) // 276 becomes 20 here, patched below
		if _, err := nw.AddInterface(intf); err != nil {
			t.Fatal(err)
		}
	}
	var frames [][]byte
	var lts []uint16
	var times []time.Time
	ifLTs := []uint16{LinkTypeEthernet, LinkTypeRaw, LinkTypeLinuxSLL2}
	for i := 0; i < 9; i++ {
		iface := i % 3
		fr := seeds[ifLTs[iface]][i/3]
		ci := gopacket.CaptureInfo{Timestamp: stamp(i), CaptureLength: len(fr), Length: len(fr), InterfaceIndex: iface}
		if err := nw.WritePacket(ci, fr); err != nil {
			t.Fatal(err)
		}
		frames, lts, times = append(frames, fr), append(lts, ifLTs[iface]), append(times, stamp(i))
	}
	if err := nw.Flush(); err != nil {
		t.Fatal(err)
	}
	file := sec1.Bytes()
	patchNgLinkType(t, file, 2, LinkTypeLinuxSLL2)

	// Section 2, big-endian and built by hand: interface 0 is now SLL2 and
	// interface 1 Ethernet, so a reader that kept section 1's interface
	// table would decode these frames with the wrong link types.
	be := binary.BigEndian
	file = append(file, ngSHB(be)...)
	file = append(file, ngIDB(be, LinkTypeLinuxSLL2, 0)...)
	file = append(file, ngIDB(be, LinkTypeEthernet, 0)...)
	for i := 0; i < 4; i++ {
		iface := i % 2
		lt := []uint16{LinkTypeLinuxSLL2, LinkTypeEthernet}[iface]
		fr := seeds[lt][i]
		ts := stamp(100 + i).Truncate(time.Microsecond)
		file = append(file, ngEPB(be, uint32(iface), ts, uint32(len(fr)), fr)...)
		frames, lts, times = append(frames, fr), append(lts, lt), append(times, ts)
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "mixed.pcapng")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, path)
	checkFrames(t, got, lts, frames, times)
	if got[2].view.Class != ClassOK || got[2].view.PktType != PacketOtherHost {
		t.Errorf("SLL2 frame: class %v pkttype %d", got[2].view.Class, got[2].view.PktType)
	}

	// The same file gzip-compressed.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(file)
	zw.Close()
	gzPath := filepath.Join(dir, "mixed.pcapng.gz")
	if err := os.WriteFile(gzPath, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	checkFrames(t, readAll(t, gzPath), lts, frames, times)
}

func TestCaptureGzipPcap(t *testing.T) {
	frames := seedFrames(t)[LinkTypeEthernet]
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	w, err := NewCaptureWriter(zw, LinkTypeEthernet, true)
	if err != nil {
		t.Fatal(err)
	}
	var times []time.Time
	var lts []uint16
	for i, f := range frames {
		if err := w.WritePacket(stamp(i), f); err != nil {
			t.Fatal(err)
		}
		times, lts = append(times, stamp(i)), append(lts, LinkTypeEthernet)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	path := filepath.Join(t.TempDir(), "x.pcap.gz")
	os.WriteFile(path, buf.Bytes(), 0o644)
	checkFrames(t, readAll(t, path), lts, frames, times)
}

func TestCaptureUnsupportedLinkType(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wifi.pcap")
	w, err := CreateCapture(path, 105) // LINKTYPE_IEEE802_11
	if err != nil {
		t.Fatal(err)
	}
	w.WritePacket(stamp(0), []byte{0x08, 0x00, 0x00, 0x00})
	w.Close()
	got := readAll(t, path)
	if len(got) != 1 || got[0].view.Class != ClassUnsupportedLink || got[0].linkType != 105 || got[0].view.LinkType != 105 {
		t.Fatalf("got %+v", got)
	}
}

func TestCaptureErrors(t *testing.T) {
	dir := t.TempDir()
	frame := ethTCPFrame(t)
	le := binary.LittleEndian

	// A pcap whose third record is cut short.
	var cut bytes.Buffer
	w, _ := NewCaptureWriter(&cut, LinkTypeEthernet, true)
	for i := 0; i < 3; i++ {
		w.WritePacket(stamp(i), frame)
	}
	w.Close()

	// A pcap record claiming 2 GiB.
	var huge bytes.Buffer
	w, _ = NewCaptureWriter(&huge, LinkTypeEthernet, true)
	w.WritePacket(stamp(0), frame)
	w.Close()
	binary.LittleEndian.PutUint32(huge.Bytes()[24+8:], 1<<31)
	binary.LittleEndian.PutUint32(huge.Bytes()[24+12:], 1<<31)

	// pcapng blocks that lie about their packet's length.
	ngHuge := cat(ngSHB(le), ngIDB(le, 1, 0), ngEPB(le, 0, stamp(0), 1<<31-1, frame))
	ngOver := cat(ngSHB(le), ngIDB(le, 1, 0), ngEPB(le, 0, stamp(0), uint32(len(frame)+100), frame))

	tests := []struct {
		name    string
		content []byte // nil: the file does not exist
		open    bool   // OpenCapture succeeds, Next fails
		frame   string
	}{
		{"missing", nil, false, ""},
		{"empty", []byte{}, false, ""},
		{"text", []byte("this is not a capture\n"), false, ""},
		{"cut pcap header", cut.Bytes()[:20], false, ""},
		{"cut record", cut.Bytes()[:cut.Len()-10], true, "frame 3"},
		{"huge record", huge.Bytes(), true, "frame 1"},
		{"pcapng huge packet", ngHuge, true, "frame 1"},
		{"pcapng packet longer than its block", ngOver, true, "frame 1"},
		{"pcapng without interface", cat(ngSHB(le), ngEPB(le, 0, stamp(0), uint32(len(frame)), frame)), true, "frame 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if tc.content != nil {
				os.WriteFile(path, tc.content, 0o644)
			}
			r, err := OpenCapture(path)
			if !tc.open {
				if err == nil {
					r.Close()
					t.Fatal("OpenCapture succeeded")
				}
				if !strings.Contains(err.Error(), path) {
					t.Fatalf("error %q does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("OpenCapture: %v", err)
			}
			defer r.Close()
			var v View
			for {
				_, err = r.Next(&v)
				if err != nil {
					break
				}
			}
			if err == io.EOF {
				t.Fatal("reached EOF without an error")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.frame) {
				t.Fatalf("error %q does not name the file and %s", err, tc.frame)
			}
		})
	}
}

func TestCaptureWriterErrors(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewCaptureWriter(&buf, LinkTypeEthernet, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC), []byte{1}); err == nil {
		t.Error("timestamp before 1970 accepted")
	}
	if err := w.WritePacket(stamp(0), make([]byte, writerSnapLen+1)); err == nil {
		t.Error("frame over the snap length accepted")
	}
	if _, err := CreateCapture(filepath.Join(t.TempDir(), "no", "such", "dir.pcap"), 1); err == nil {
		t.Error("CreateCapture in a missing directory succeeded")
	}
	// A zero time is written as the epoch, not as the current time.
	buf.Reset()
	w, _ = NewCaptureWriter(&buf, LinkTypeEthernet, true)
	if err := w.WritePacket(time.Time{}, []byte{1}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if rec := buf.Bytes()[24:32]; !bytes.Equal(rec, make([]byte, 8)) {
		t.Errorf("zero time written as %x", rec)
	}
}

// TestCaptureDataWritable modifies the returned bytes (as DecTTL does) and
// checks that the reader is not disturbed.
func TestCaptureDataWritable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.pcap")
	w, _ := CreateCapture(path, LinkTypeEthernet)
	frame := ethTCPFrame(t)
	for i := 0; i < 3; i++ {
		w.WritePacket(stamp(i), frame)
	}
	w.Close()
	r, err := OpenCapture(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var v View
	for i := 0; i < 3; i++ {
		if _, err := r.Next(&v); err != nil {
			t.Fatal(err)
		}
		if v.TTL != 52 {
			t.Fatalf("frame %d: TTL %d", i+1, v.TTL)
		}
		v.DecTTL()
		if r.Data()[14+8] != 51 || !v.IPv4ChecksumValid() {
			t.Fatalf("frame %d: DecTTL did not write through", i+1)
		}
	}
}

func TestCaptureNextAllocs(t *testing.T) {
	frame := ethTCPFrame(t)
	dir := t.TempDir()
	pcapPath := filepath.Join(dir, "a.pcap")
	w, _ := CreateCapture(pcapPath, LinkTypeEthernet)
	var ng bytes.Buffer
	nw, _ := pcapgo.NewNgWriter(&ng, layers.LinkTypeEthernet)
	const n = 500
	for i := 0; i < n; i++ {
		w.WritePacket(stamp(i), frame)
		nw.WritePacket(gopacket.CaptureInfo{Timestamp: stamp(i), CaptureLength: len(frame), Length: len(frame)}, frame)
	}
	w.Close()
	nw.Flush()
	ngPath := filepath.Join(dir, "a.pcapng")
	os.WriteFile(ngPath, ng.Bytes(), 0o644)
	for _, path := range []string{pcapPath, ngPath} {
		r, err := OpenCapture(path)
		if err != nil {
			t.Fatal(err)
		}
		var v View
		if _, err := r.Next(&v); err != nil { // sizes the buffers
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(n/2, func() {
			if _, err := r.Next(&v); err != nil {
				t.Fatal(err)
			}
		})
		r.Close()
		if allocs != 0 {
			t.Errorf("%s: %v allocs per Next", filepath.Base(path), allocs)
		}
	}
}

func TestNgLinkTypesChunking(t *testing.T) {
	// Feed a two-section file one byte at a time: the tracker must follow
	// block boundaries across reads.
	le := binary.LittleEndian
	frame := ethTCPFrame(t)
	file := cat(ngSHB(le), ngIDB(le, 1, 0), ngIDB(le, LinkTypeLinuxSLL2, 0), ngEPB(le, 1, stamp(0), uint32(len(frame)), frame),
		ngSHB(binary.BigEndian), ngIDB(binary.BigEndian, LinkTypeRaw, 0))
	tr := &ngLinkTypes{r: iotest.OneByteReader(bytes.NewReader(file))}
	if _, err := io.Copy(io.Discard, tr); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		sec, iface int
		lt         uint16
		ok         bool
	}{{0, 0, 1, true}, {0, 1, 276, true}, {1, 0, 101, true}, {1, 1, 0, false}, {2, 0, 0, false}} {
		lt, ok := tr.lookup(c.sec, c.iface)
		if lt != c.lt || ok != c.ok {
			t.Errorf("lookup(%d, %d) = %d, %v, want %d, %v", c.sec, c.iface, lt, ok, c.lt, c.ok)
		}
	}
	// A corrupt block length stops the stream with an error.
	bad := cat(ngSHB(le), ngBlock(le, ngBlockIDB, []byte{1, 0, 0, 0, 0, 0, 0, 0}))
	binary.LittleEndian.PutUint32(bad[28+4:], 8)
	tr = &ngLinkTypes{r: bytes.NewReader(bad)}
	if _, err := io.Copy(io.Discard, tr); !errors.Is(err, errNgBlockLength) {
		t.Fatalf("corrupt length: %v", err)
	}
}

// FuzzCapture feeds arbitrary files to the reader: it must return frames or
// an error naming the file, never panic or allocate without bound.
func FuzzCapture(f *testing.F) {
	le := binary.LittleEndian
	frame := ethTCPFrame(f)
	var pc bytes.Buffer
	w, _ := NewCaptureWriter(&pc, LinkTypeEthernet, true)
	w.WritePacket(stamp(0), frame)
	w.WritePacket(stamp(1), frame[:30])
	w.Close()
	f.Add(pc.Bytes())
	f.Add(bePcap(0xa1b2c3d4, 276, seedFrames(f)[LinkTypeLinuxSLL2][:2], []time.Time{stamp(0), stamp(1)}, false))
	f.Add(cat(ngSHB(le), ngIDB(le, 1, 0), ngIDB(le, 276, 0), ngEPB(le, 1, stamp(0), uint32(len(frame)), frame),
		ngSHB(binary.BigEndian), ngIDB(binary.BigEndian, 101, 0), ngEPB(binary.BigEndian, 0, stamp(1), 20, frame[14:34])))
	var ng bytes.Buffer
	nw, _ := pcapgo.NewNgWriter(&ng, layers.LinkTypeEthernet)
	nw.WritePacket(gopacket.CaptureInfo{Timestamp: stamp(0), CaptureLength: len(frame), Length: len(frame)}, frame)
	nw.Flush()
	f.Add(ng.Bytes())
	path := filepath.Join(f.TempDir(), "fuzz.cap")
	f.Fuzz(func(t *testing.T, content []byte) {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := OpenCapture(path)
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		defer r.Close()
		var v View
		for i := 0; i < 1000; i++ {
			n, err := r.Next(&v)
			if err == io.EOF {
				return
			}
			if err != nil {
				if !strings.Contains(err.Error(), path) {
					t.Fatalf("error %q does not name the file", err)
				}
				return
			}
			if n != i+1 {
				t.Fatalf("frame number %d, want %d", n, i+1)
			}
			if v.Class != ClassUnsupportedLink {
				checkInvariants(t, r.Data(), &v)
			}
		}
	})
}
