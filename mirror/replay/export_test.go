package replay

import "github.com/stackcopy/stackcopy/mirror"

// QueuedBytes reports the captured bytes queued for session k, and whether
// the replayer still tracks k. Tests use it to check the QueueBytes bound.
func (r *Replayer) QueuedBytes(k mirror.SessionKey) (int, bool) {
	r.mu.Lock()
	s := r.sessions[k]
	r.mu.Unlock()
	if s == nil {
		return 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes, true
}
