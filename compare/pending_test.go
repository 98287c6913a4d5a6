package compare

import "testing"

// Entries stay until every side's cursor passed them; Max bounds them
// when a side never reads.
func TestPending(t *testing.T) {
	p := Pending[int]{Max: 2000}
	fast, slow := p.Cursor(), p.Cursor()
	for i := range 1500 {
		p.Add(i)
	}
	fast.At = 1500
	if e, ok := p.At(0); !ok || *e != 0 {
		t.Fatalf("entry 0 dropped while the slow side has not read it")
	}
	slow.At = 1200
	p.Add(1500) // trims what both passed
	if _, ok := p.At(1199); ok {
		t.Errorf("entry 1199 kept after both sides passed it")
	}
	if e, ok := p.At(1200); !ok || *e != 1200 || p.End() != 1501 {
		t.Errorf("entry 1200 %v %v, end %d", e, ok, p.End())
	}
	// A side that never reads: the oldest go past Max, and its cursor
	// moves up to the oldest kept.
	stuck := p.Cursor()
	for i := 1501; i < 6000; i++ {
		p.Add(i)
		fast.At, slow.At = p.End(), p.End()
	}
	if n := p.End() - stuck.At; n > p.Max+1024 || stuck.At == 1200 {
		t.Errorf("a side that never reads holds %d entries (max %d), cursor at %d", n, p.Max, stuck.At)
	}
}
