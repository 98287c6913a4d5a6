package replay

import "github.com/stackcopy/stackcopy/session"

// QueuedBytes reports the captured bytes queued for session k, and whether
// the replayer still tracks k. Tests use it to check the QueueBytes bound.
func (r *Replayer) QueuedBytes(k session.SessionKey) (int, bool) {
	r.mu.Lock()
	copies := r.sessions[k]
	r.mu.Unlock()
	if len(copies) == 0 {
		return 0, false
	}
	s := copies[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes, true
}

// TargetEnded reports whether session k's reader has seen the target's
// FIN, RST or another read error, or k has no running session (it ended).
func (r *Replayer) TargetEnded(k session.SessionKey) bool {
	r.mu.Lock()
	copies := r.sessions[k]
	r.mu.Unlock()
	if len(copies) == 0 {
		return true
	}
	s := copies[0]
	select {
	case <-s.rcvDone:
		return true
	default:
		return false
	}
}
