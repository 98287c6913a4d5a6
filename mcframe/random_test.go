package mcframe

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// A grammar-aware generator of whole conversations: pipelined batches of
// text and meta commands (noreply, quiet, O and k flags), answered by a
// model of memcached 1.6 (a store of values), with empty, huge and
// framing-like values. The model knows which request each answer belongs
// to, hence the offsets where each unit completes; where the framer's
// attribution of an answer is documented as approximate (a quiet request
// without O that could have given it), the batch is checked at its end
// (an mn closes every batch that has quiet requests).

func pick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

type quietReq struct {
	kind uint8
	hasO bool
}

type model struct {
	rng   *rand.Rand
	store map[string]string

	client strings.Builder
	server strings.Builder
	ends   []int
	exact  bool
	reqs   int
	quiet  []quietReq // quiet requests whose answers were suppressed, since the last answer
	nextO  int
}

func (m *model) val() string {
	switch m.rng.IntN(30) {
	case 0:
		return ""
	case 1:
		return strings.Repeat("v", 70000)
	case 2:
		return "END\r\nVALUE k 0 1\r\nMN\r\n"
	}
	return fmt.Sprintf("value%d", m.rng.IntN(100))
}

func (m *model) key() string { return pick(m.rng, "a", "b", "c", "n", "key:1234567890") }

// answer writes the answer of a request: its line, and data (a data block
// completing it when isData), given whether it is an error and its code
// and O flag for the quiet check.
func (m *model) answer(line, data string, hasData bool, code string, hasO bool) {
	for _, q := range m.quiet {
		if code == "ERROR" || (!q.hasO && !hasO && visible(q.kind, code)) {
			m.exact = false
		}
	}
	// The quiet requests skipped complete at the answer's first line.
	first := m.server.Len() + strings.Index(line, "\n") + 1
	m.server.WriteString(line)
	for range m.quiet {
		m.ends = append(m.ends, first)
	}
	m.quiet = m.quiet[:0]
	if hasData {
		m.server.WriteString(data)
	}
	m.ends = append(m.ends, m.server.Len())
}

func visible(kind uint8, code string) bool {
	switch kind {
	case kMg:
		return code == "VA" || code == "HD"
	case kMs:
		return code == "NS" || code == "EX" || code == "NF"
	case kMd:
		return code == "NF" || code == "EX"
	case kMa:
		return code == "NF" || code == "NS" || code == "EX"
	}
	return false
}

func (m *model) send(s string, request bool) {
	m.client.WriteString(s)
	if request {
		m.reqs++
	}
}

// metaFlags returns the flags of a meta request: q, O, k at random.
func (m *model) metaFlags() (flags string, quiet, hasO, hasK bool, o string) {
	quiet = m.rng.IntN(2) == 0
	hasO = m.rng.IntN(3) > 0
	hasK = m.rng.IntN(3) == 0
	if quiet {
		flags += " q"
	}
	if hasO {
		m.nextO++
		o = fmt.Sprintf("O%d", m.nextO)
		flags += " " + o
	}
	if hasK {
		flags += " k"
	}
	return
}

// ret is the flags an answer carries back.
func ret(hasO bool, o string, hasK bool, key string) string {
	s := ""
	if hasO {
		s += " " + o
	}
	if hasK {
		s += " k" + key
	}
	return s
}

func (m *model) step() {
	r := m.rng
	k := m.key()
	v, exists := m.store[k]
	switch c := r.IntN(16); c {
	case 0, 1: // storage
		verb := pick(r, "set", "add", "replace", "append", "prepend", "cas")
		nv := m.val()
		noreply := r.IntN(4) == 0
		line := fmt.Sprintf("%s %s %d %d %d", verb, k, r.IntN(100), r.IntN(100), len(nv))
		if verb == "cas" {
			line += fmt.Sprintf(" %d", r.IntN(100))
		}
		if noreply {
			line += " noreply"
		}
		m.send(line+pick(r, "\r\n", "\n")+nv+"\r\n", !noreply)
		ans := "STORED"
		switch {
		case verb == "add" && exists, verb != "set" && verb != "add" && !exists:
			ans = "NOT_STORED"
			if verb == "cas" {
				ans = "NOT_FOUND"
			}
		case verb == "cas":
			ans = pick(r, "EXISTS", "STORED")
		}
		if ans == "STORED" {
			m.store[k] = nv
		}
		if !noreply {
			m.answer(ans+"\r\n", "", false, ans, false)
		}
	case 2, 3: // retrieval
		verb := pick(r, "get", "gets", "gat", "gats")
		keys := []string{k}
		for range r.IntN(4) {
			keys = append(keys, m.key())
		}
		line := verb
		if verb == "gat" || verb == "gats" {
			line += " 100"
		}
		m.send(line+" "+strings.Join(keys, " ")+"\r\n", true)
		var b strings.Builder
		for _, key := range keys {
			if val, ok := m.store[key]; ok {
				fmt.Fprintf(&b, "VALUE %s %d %d", key, 0, len(val))
				if strings.HasSuffix(verb, "s") {
					b.WriteString(" 12345")
				}
				b.WriteString("\r\n" + val + "\r\n")
			}
		}
		b.WriteString("END\r\n")
		m.answer(b.String(), "", false, "VALUE", false)
	case 4: // one-line commands
		noreply := r.IntN(4) == 0
		nr := ""
		if noreply {
			nr = " noreply"
		}
		line, ans := "", ""
		switch r.IntN(5) {
		case 0:
			line, ans = "delete "+k+nr, pick(r, "DELETED", "NOT_FOUND")
			delete(m.store, k)
		case 1:
			line, ans = pick(r, "incr ", "decr ")+k+" 5"+nr, pick(r, "NOT_FOUND", "10", "18446744073709551615")
		case 2:
			line, ans = "touch "+k+" 10"+nr, pick(r, "TOUCHED", "NOT_FOUND")
		case 3:
			line, ans = "flush_all"+nr, "OK"
			clear(m.store)
		case 4:
			line, ans = "verbosity 1"+nr, "OK"
		}
		m.send(line+"\r\n", !noreply)
		if !noreply {
			m.answer(ans+"\r\n", "", false, ans, false)
		}
	case 5:
		switch r.IntN(4) {
		case 0:
			m.send("version\r\n", true)
			m.answer("VERSION 1.6.18\r\n", "", false, "VERSION", false)
		case 1:
			m.send("stats\r\n", true)
			m.answer("STAT pid 1\r\nSTAT uptime 5\r\nSTAT version 1.6.18\r\nSTAT curr_items 3\r\nEND\r\n", "", false, "STAT", false)
		case 2:
			m.send(pick(r, "stats reset\r\n", "stats detail on\r\n"), true)
			m.answer(pick(r, "RESET\r\n", "OK\r\n"), "", false, "OK", false)
		case 3:
			m.send(pick(r, "bogus\r\n", "\r\n", "get\r\n"), true)
			m.answer("ERROR\r\n", "", false, "ERROR", false)
		}
	case 6, 7, 8: // mg
		flags, quiet, hasO, hasK, o := m.metaFlags()
		withV := r.IntN(2) == 0
		if withV {
			flags += " v"
		}
		m.send("mg "+k+flags+" t\r\n", true)
		switch {
		case !exists && quiet:
			m.quiet = append(m.quiet, quietReq{kind: kMg, hasO: hasO})
		case !exists:
			m.answer("EN"+ret(hasO, o, hasK, k)+"\r\n", "", false, "EN", hasO)
		case withV:
			m.answer(fmt.Sprintf("VA %d%s t-1\r\n", len(v), ret(hasO, o, hasK, k)), v+"\r\n", true, "VA", hasO)
		default:
			m.answer(fmt.Sprintf("HD%s t-1\r\n", ret(hasO, o, hasK, k)), "", false, "HD", hasO)
		}
	case 9, 10: // ms
		flags, quiet, hasO, hasK, o := m.metaFlags()
		nv := m.val()
		add := r.IntN(3) == 0
		if add {
			flags += " ME"
		}
		m.send(fmt.Sprintf("ms %s %d%s T0\r\n%s\r\n", k, len(nv), flags, nv), true)
		switch {
		case add && exists:
			m.answer("NS"+ret(hasO, o, hasK, k)+"\r\n", "", false, "NS", hasO)
		case quiet:
			m.store[k] = nv
			m.quiet = append(m.quiet, quietReq{kind: kMs, hasO: hasO})
		default:
			m.store[k] = nv
			m.answer("HD"+ret(hasO, o, hasK, k)+"\r\n", "", false, "HD", hasO)
		}
	case 11: // md
		flags, quiet, hasO, hasK, o := m.metaFlags()
		m.send("md "+k+flags+"\r\n", true)
		switch {
		case !exists:
			m.answer("NF"+ret(hasO, o, hasK, k)+"\r\n", "", false, "NF", hasO)
		case quiet:
			delete(m.store, k)
			m.quiet = append(m.quiet, quietReq{kind: kMd, hasO: hasO})
		default:
			delete(m.store, k)
			m.answer("HD"+ret(hasO, o, hasK, k)+"\r\n", "", false, "HD", hasO)
		}
	case 12: // ma
		flags, quiet, hasO, hasK, o := m.metaFlags()
		withV := r.IntN(2) == 0
		if withV {
			flags += " v"
		}
		m.send("ma "+k+flags+"\r\n", true)
		switch {
		case !exists:
			m.answer("NF"+ret(hasO, o, hasK, k)+"\r\n", "", false, "NF", hasO)
		case quiet:
			m.quiet = append(m.quiet, quietReq{kind: kMa, hasO: hasO})
		case withV:
			m.answer("VA 2"+ret(hasO, o, hasK, k)+"\r\n", "42\r\n", true, "VA", hasO)
		default:
			m.answer("HD"+ret(hasO, o, hasK, k)+"\r\n", "", false, "HD", hasO)
		}
	case 13:
		m.send("me "+k+"\r\n", true)
		if exists {
			m.answer("ME "+k+" exp=-1 la=1 cas=2 fetch=no cls=1 size=63\r\n", "", false, "ME", false)
		} else {
			m.answer("EN\r\n", "", false, "EN", false)
		}
	default:
		m.send("mn\r\n", true)
		m.answer("MN\r\n", "", false, "MN", false)
	}
}

func TestRandomConversations(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	n := 1500
	if testing.Short() {
		n = 200
	}
	for i := range n {
		m := &model{rng: rng, store: map[string]string{}}
		f := New()
		answered := 0
		for range 1 + rng.IntN(10) {
			m.client.Reset()
			m.server.Reset()
			m.ends, m.exact = nil, true
			for range 1 + rng.IntN(pick(rng, 1, 4, 16)) {
				m.step()
			}
			if len(m.quiet) > 0 || !m.exact {
				m.send("mn\r\n", true)
				m.answer("MN\r\n", "", false, "MN", false)
			}
			feedChecked(t, f, true, m.client.String(), rng)
			if f.Requests() != m.reqs {
				t.Fatalf("conversation %d: requests %d, want %d\n%q", i, f.Requests(), m.reqs, m.client.String())
			}
			data := m.server.String()
			for pos := 0; pos < len(data); {
				n := 1 + rng.IntN(min(len(data)-pos, pick(rng, 1, 7, 100, 5000)))
				f.Server([]byte(data[pos : pos+n]))
				pos += n
				if f.Err() != nil {
					t.Fatalf("conversation %d: %v\nclient %q\nserver %q", i, f.Err(), m.client.String(), data)
				}
				want := answered
				for _, e := range m.ends {
					if e <= pos {
						want++
					}
				}
				if (m.exact || pos == len(data)) && f.Answers() != want {
					t.Fatalf("conversation %d: at %d/%d Answers %d, want %d\nclient %q\nserver %q", i, pos, len(data), f.Answers(), want, m.client.String(), data)
				}
			}
			answered += len(m.ends)
		}
		if f.Requests() != m.reqs || f.Answers() != m.reqs {
			t.Fatalf("conversation %d: requests %d answers %d, want %d", i, f.Requests(), f.Answers(), m.reqs)
		}
	}
}

func feedChecked(t *testing.T, f *Framer, client bool, data string, rng *rand.Rand) {
	t.Helper()
	for pos := 0; pos < len(data); {
		n := 1 + rng.IntN(min(len(data)-pos, pick(rng, 1, 7, 100, 5000)))
		if client {
			f.Client([]byte(data[pos : pos+n]))
		} else {
			f.Server([]byte(data[pos : pos+n]))
		}
		pos += n
		if f.Err() != nil {
			t.Fatalf("err %v\n%q", f.Err(), data)
		}
	}
}

// TestRandomAgainstGomemcache checks random get answers against
// gomemcache, and gomemcache's other commands.
func TestRandomAgainstGomemcache(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	if err := checkOps(rng); err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		var b strings.Builder
		keys := []string{"a", "b", "key:1"}
		for range rng.IntN(4) {
			k := pick(rng, keys...)
			val := pick(rng, "", "x", "END\r\n", "VALUE a 0 1\r\n", strings.Repeat("z", 5000))
			fmt.Fprintf(&b, "VALUE %s %d %d%s\r\n%s\r\n", k, rng.IntN(70000), len(val), pick(rng, "", " 77"), val)
		}
		b.WriteString(pick(rng, "END\r\n", "END\r\n", "SERVER_ERROR out of memory\r\n", "END\n", "END \r\n", "VALUE a 0 1\r\nxy\r\nEND\r\n", "VALUE a 0 -1\r\n"))
		data := []byte(b.String())
		if rng.IntN(4) == 0 {
			data = data[:rng.IntN(len(data)+1)]
		}
		if err := checkGet(data, keys); err != nil {
			t.Fatalf("case %d: %v\n%q", i, err, data)
		}
	}
}
