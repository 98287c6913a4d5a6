package myframe

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// checkConversation feeds a generated conversation to a framer in random
// chunks and checks the counts after each step. With swap, a command and
// its answer are sometimes shown server first (the answer must be held
// until the command is in).
func checkConversation(rng *rand.Rand, c *conversation, swap bool) error {
	f := New()
	prevReq, prevAns := 0, 0
	check := func(i int, req, ans int) error {
		if err := f.Err(); err != nil {
			return fmt.Errorf("step %d: Err %v", i, err)
		}
		if f.Requests() != req || f.Answers() != ans {
			return fmt.Errorf("step %d: Requests %d Answers %d, want %d %d", i, f.Requests(), f.Answers(), req, ans)
		}
		return nil
	}
	for i := 0; i < len(c.steps); i++ {
		s := c.steps[i]
		if swap && s.client && i+1 < len(c.steps) && prevAns == prevReq+1 && len(c.steps[i+1].data) <= MaxHeld && rng.IntN(3) == 0 {
			n := c.steps[i+1]
			feedSplit(rng, f, false, n.data)
			if err := check(i+1, prevReq, prevAns); err != nil {
				return fmt.Errorf("answer shown first: %w", err)
			}
			feedSplit(rng, f, true, s.data)
			if err := check(i, n.req, n.ans); err != nil {
				return fmt.Errorf("answer shown first: %w", err)
			}
			prevReq, prevAns = n.req, n.ans
			i++
			continue
		}
		feedSplit(rng, f, s.client, s.data)
		if err := check(i, s.req, s.ans); err != nil {
			return err
		}
		prevReq, prevAns = s.req, s.ans
	}
	return nil
}

func TestRandomConversations(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	n := 3000
	if testing.Short() {
		n = 300
	}
	for i := range n {
		g := &gen{rng: rng, huge: !testing.Short() && i%300 == 7}
		g.session()
		if err := checkConversation(rng, &g.conv, true); err != nil {
			t.Fatalf("case %d: %v\n%s", i, err, &g.conv)
		}
	}
}
