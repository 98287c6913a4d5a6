package replay_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stackcopy/stackcopy/replay"
)

// A toy protocol whose server numbers things: "PREP\n" is answered
// "ID n\n", "USE n\n" names n and is answered "OK n\n". numFramer counts
// answer lines and hands on the numbers of ID lines; numRewriter renames
// USE lines. They stand in for myframe's Framer and Renumber.
type numFramer struct {
	lineFramer
	mu   sync.Mutex
	nums []uint32
}

func (f *numFramer) Server(p []byte) {
	f.lineFramer.Server(p)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range strings.Split(string(p), "\n") {
		var n uint32
		if _, err := fmt.Sscanf(l, "ID %d", &n); err == nil {
			f.nums = append(f.nums, n)
		}
	}
}

func (f *numFramer) Numbered(dst []uint32) ([]uint32, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	dst = append(dst, f.nums...)
	f.nums = f.nums[:0]
	return dst, true
}

type numRewriter struct {
	prod, tgt        []uint32
	renumbered, unkn *atomic.Uint64
}

func (r *numRewriter) Production(ids []uint32, _ bool) { r.prod = append(r.prod, ids...) }
func (r *numRewriter) Target(ids []uint32, _ bool)     { r.tgt = append(r.tgt, ids...) }
func (r *numRewriter) Flush() []byte                   { return nil }
func (r *numRewriter) Rewrite(p []byte) []byte {
	var n uint32
	if _, err := fmt.Sscanf(string(p), "USE %d\n", &n); err != nil {
		return p
	}
	if i := slices.Index(r.prod, n); i >= 0 && i < len(r.tgt) {
		r.renumbered.Add(1)
		return fmt.Appendf(nil, "USE %d\n", r.tgt[i])
	}
	r.unkn.Add(1)
	return p
}

// TestRenumbering: production's numbers reach the player with the turns
// (from the capture side's framer), the target's from the player's own;
// the client's bytes are written renamed, and counted.
func TestRenumbering(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var used []string
	addr := serveTCP(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		next := 40 // the target numbers from 40, production from 1
		for {
			c.SetReadDeadline(time.Now().Add(bound))
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if l == "PREP\n" {
				fmt.Fprintf(c, "ID %d\n", next)
				next++
				continue
			}
			mu.Lock()
			used = append(used, strings.TrimSpace(l))
			mu.Unlock()
			fmt.Fprintf(c, "OK\n")
		}
	})
	proto := replay.Protocol{
		Name:   "numbered",
		New:    func() replay.Framer { return new(numFramer) },
		Detect: func(p []byte) bool { return bytes.HasPrefix(p, []byte("PREP")) },
		Renumber: func(renumbered, unknown *atomic.Uint64) replay.Renumberer {
			return &numRewriter{renumbered: renumbered, unkn: unknown}
		},
	}
	r, _ := newReplayer(t, addr, &dialer{tap: true}, func(c *replay.Config) {
		c.Protocols = []replay.Protocol{proto}
	}, nil)
	feed(r, key(1), open(),
		data("PREP\n"), srvData("ID 1\n"), turn(5),
		data("PREP\n"), srvData("ID 2\n"), turn(5),
		data("USE 2\n"), srvData("OK\n"), turn(3),
		data("USE 1\n"), srvData("OK\n"), turn(3),
		data("USE 9\n"), srvData("OK\n"), turn(3), fin())
	r.CloseInput()
	if !waitReplay(r, bound) {
		t.Fatal("Wait did not return")
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"USE 41", "USE 40", "USE 9"}; !slices.Equal(used, want) {
		t.Errorf("the target was sent %q, want %q", used, want)
	}
	st := r.Stats()
	if ps := st.Protocols["numbered"]; ps.Renumbered != 2 || ps.NotRenumbered != 1 || st.Completed != 1 {
		t.Errorf("stats %+v, protocol %+v: want a completed session, 2 renumbered and 1 unknown", st, ps)
	}
}
