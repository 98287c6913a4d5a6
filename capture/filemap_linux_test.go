package capture

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// records builds n data segments of size bytes each, payload i filled
// with byte i, so a payload read from the wrong place shows.
func records(t testing.TB, n, size int) []rec {
	var recs []rec
	for i := range n {
		p := pkt{src: cli, dst: srv, seq: uint32(1 + i*size), ack: 1, flags: FlagACK, payload: bytes.Repeat([]byte{byte(i)}, size)}
		recs = append(recs, rec{data: p.frame(t, lkEthernet), ts: t0})
	}
	return recs
}

// checkRecords checks segments read from records(n, size); lengths: read
// with LengthsOnly, so the payloads are zeros.
func checkRecords(t *testing.T, segs []Segment, n, size int, lengths bool) {
	t.Helper()
	if len(segs) != n {
		t.Fatalf("%d segments, want %d", len(segs), n)
	}
	for i, s := range segs {
		want := byte(i)
		if lengths {
			want = 0
		}
		if len(s.Payload) != size || s.Payload[0] != want || s.Payload[size-1] != want || s.Seq != uint32(1+i*size) {
			t.Fatalf("segment %d: seq %d, %d bytes starting %d", i, s.Seq, len(s.Payload), s.Payload[0])
		}
	}
}

// openLengths opens path for counting: mapped, if it is a regular file.
func openLengths(t *testing.T, path string) *FileSource {
	t.Helper()
	src, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	src.LengthsOnly()
	t.Cleanup(func() { src.Close() })
	return src
}

// rest reads src to its end.
func rest(t *testing.T, src *FileSource) []Segment {
	t.Helper()
	var segs []Segment
	for {
		seg, err := src.Next()
		if err == io.EOF {
			return segs
		}
		if err != nil {
			t.Fatal(err)
		}
		segs = append(segs, seg)
	}
}

// TestMappedWindowMoves counts a file larger than one mapping window,
// with records across the window's edge.
func TestMappedWindowMoves(t *testing.T) {
	const n, size = 300, 60000
	path := writePcap(t, lkEthernet, false, records(t, n, size))
	if fi, err := os.Stat(path); err != nil || fi.Size() <= 2*mapWindow {
		t.Fatalf("file %v, err %v: want more than two windows", fi.Size(), err)
	}
	src := openLengths(t, path)
	if src.m == nil {
		t.Fatal("a regular file was not mapped")
	}
	checkRecords(t, rest(t, src), n, size, true)
}

// TestMappedFileShrinks: a capture truncated while it is replayed (say,
// tcpdump -w started again on the same name) is an error naming the file,
// not a crash.
func TestMappedFileShrinks(t *testing.T) {
	path := writePcap(t, lkEthernet, false, records(t, 200, 1448))
	src := openLengths(t, path)
	for range 10 {
		if _, err := src.Next(); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Truncate(path, 40); err != nil {
		t.Fatal(err)
	}
	_, err := src.Next()
	if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "capture.pcap: offset ") || !strings.Contains(err.Error(), "shrank") {
		t.Fatalf("err %v, want a truncation naming the file", err)
	}
	if _, again := src.Next(); again != err {
		t.Errorf("second Next: %v, want the same error", again)
	}
}

// TestFileGrows: a capture still being written is read as far as it has
// grown, mapped or read.
func TestFileGrows(t *testing.T) {
	const size = 1448
	recs := records(t, 10, size)
	whole, err := os.ReadFile(writePcap(t, lkEthernet, false, recs))
	if err != nil {
		t.Fatal(err)
	}
	half := 24 + 5*(16+len(recs[0].data))
	for _, lengths := range []bool{false, true} {
		path := filepath.Join(t.TempDir(), "growing.pcap")
		if err := os.WriteFile(path, whole[:half], 0o644); err != nil {
			t.Fatal(err)
		}
		var src *FileSource
		if lengths {
			src = openLengths(t, path)
		} else if src, err = OpenFile(path); err != nil {
			t.Fatal(err)
		}
		var segs []Segment
		for range 3 {
			seg, err := src.Next()
			if err != nil {
				t.Fatal(err)
			}
			segs = append(segs, seg)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(whole[half:]); err != nil {
			t.Fatal(err)
		}
		f.Close()
		checkRecords(t, append(segs, rest(t, src)...), 10, size, lengths)
		src.Close()
	}
}

// TestReadFromPipe: what cannot be mapped (a FIFO, as in
// `stackcopy -i <(zcat ...)`) is read, also when counting.
func TestReadFromPipe(t *testing.T) {
	const n, size = 50, 60000
	whole, err := os.ReadFile(writePcap(t, lkEthernet, false, records(t, n, size)))
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.Write(whole)
			f.Close()
		}
		done <- err
	}()
	src := openLengths(t, fifo)
	if src.m != nil {
		t.Error("a FIFO was mapped")
	}
	segs := rest(t, src)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	checkRecords(t, segs, n, size, true)
}

func BenchmarkFileSourceLarge(b *testing.B) {
	for _, lengths := range []bool{false, true} {
		name := "payloads"
		if lengths {
			name = "lengths-only"
		}
		b.Run(name, func(b *testing.B) {
			const size = 65000
			path := writePcap(b, lkEthernet, false, records(b, 2000, size))
			b.SetBytes(size)
			benchRead(b, path, lengths)
		})
	}
}
