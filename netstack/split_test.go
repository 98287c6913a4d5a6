package netstack

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/wire/wiretest"
)

// upload sends size random bytes from a forged client of a stack in the
// given GSO mode to a wiretest.Target (which cuts super-packets with the
// raw and AF_PACKET devices' splitter and checks every checksum), losing
// the segments lose picks (nil: none). It fails the test unless the target
// receives every byte intact and well formed, and returns both ends'
// counters.
func upload(t *testing.T, gso GSOMode, size int, lose func(seg []byte) bool) (Stats, wiretest.TargetStats) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.GSO = gso
	return uploadConfig(t, cfg, size, lose)
}

// uploadConfig is upload with the stack's whole configuration.
func uploadConfig(t *testing.T, cfg Config, size int, lose func(seg []byte) bool) (Stats, wiretest.TargetStats) {
	t.Helper()
	st, tg := newPairConfig(t, cfg, nil)
	tg.Lose = lose // before the first write: the dial below
	l := listen(t, tg, 80)
	type result struct {
		n   int64
		sum [32]byte
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			res <- result{err: err}
			return
		}
		defer c.Close()
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		r.n, r.err = n, err
		copy(r.sum[:], h.Sum(nil))
		res <- r
	}()

	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	c, err := st.DialFrom(dctx, netip.AddrPortFrom(wiretest.Src, 40000), netip.AddrPortFrom(targetAddr, 80))
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i+8 <= len(data); i += 8 {
		binary.LittleEndian.PutUint64(data[i:], rng.Uint64())
	}
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-res:
	case <-time.After(60 * time.Second):
		t.Fatal("target did not receive the upload within 60s")
	}
	c.Close()
	if r.err != nil || r.n != int64(len(data)) || r.sum != sha256.Sum256(data) {
		t.Fatalf("target got %d bytes (err %v), want %d identical bytes", r.n, r.err, len(data))
	}
	ts := tg.Stats()
	if ts.Bad > 0 {
		t.Errorf("%d segments oversized or with bad checksums", ts.Bad)
	}
	if e := tg.ChecksumErrors(); e > 0 {
		t.Errorf("target counted %d TCP checksum errors", e)
	}
	return st.Stats(), ts
}

// TestGSOSplitCarriesStackTraffic sends an upload from the forged-client
// stack in each GSO mode through the splitter into a gVisor target that
// checks every checksum.
func TestGSOSplitCarriesStackTraffic(t *testing.T) {
	for _, mode := range []struct {
		name string
		gso  GSOMode
	}{{"off", GSOOff}, {"coalesce", GSOCoalesce}, {"host", GSOHost}} {
		t.Run(mode.name, func(t *testing.T) {
			_, ts := upload(t, mode.gso, 4<<20, nil)
			// The coalescer merges only what queued up meanwhile, which may
			// be nothing here; gVisor's host GSO always builds super-packets.
			if mode.gso == GSOHost && ts.Supers == 0 {
				t.Errorf("GSO mode %s produced no super-packet: the splitter was not exercised", mode.name)
			}
			t.Logf("%d super-packets, %d segments", ts.Supers, ts.Segments)
		})
	}
}
