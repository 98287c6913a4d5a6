package h2frame

import "encoding/binary"

// This file is the flow control a replayer needs to keep a replayed
// session within the target's windows, both ways (see the package doc's
// "Flow control"):
//
//   - The target's windows for the client's DATA (SendWindow,
//     ConnSendWindow, SendAllowance): a replayer holds a DATA frame that
//     does not fit until the target's WINDOW_UPDATE makes room, finding
//     the frames with NextClientData.
//   - The client's windows for the target's DATA: its
//     SETTINGS_INITIAL_WINDOW_SIZE (65535 by default) and its
//     WINDOW_UPDATEs, minus the target's DATA. A target that answers more
//     than production did uses up windows that the captured
//     WINDOW_UPDATEs do not refill; WindowUpdates makes the frames a
//     client that reads as it goes would send, at a client frame boundary
//     (ClientAtFrameBoundary).

// SendAllowance is how many bytes of DATA the target allows the client to
// send on stream id now: the smaller of the stream's window (SendWindow)
// and the connection's. DATA on a stream the client ended or that is
// closed is a stream error the target answers, not a flow-control one: the
// connection's window only. Before the target's first SETTINGS frame
// nothing is allowed, as its initial window is not known yet (a server
// may enforce the window it announces from the start).
func (f *Framer) SendAllowance(id uint32) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.srvSettings {
		return 0
	}
	w := f.connWindow
	switch i := f.streams.find(id); {
	case id == 0:
	case id&1 == 1 && id > f.maxClient:
		w = min(w, f.initialWindow)
	case i >= 0 && !f.streams.slots[i].clientEnded:
		w = min(w, f.initialWindow+f.streams.slots[i].windowChange)
	}
	return w
}

// NextClientData looks ahead in p, the client bytes that come next
// (before they are shown to Client), for the first DATA frame whose header
// completes within p. It returns where that frame begins in p (0 when its
// header began in bytes shown before), where its header ends, its stream
// and its payload length (padding included). ok is false when no DATA
// header completes in p, or the framer does not follow the client's frames
// (an h2c upgrade request, a failure). Showing Client p[:at], then the
// frame's header, one at a time, lets a caller hold the frame back until
// the target's windows have room for it.
func (f *Framer) NextClientData(p []byte) (at, end int, stream uint32, length int64, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := &f.cli
	if f.failure.Load() != nil {
		return 0, 0, 0, 0, false
	}
	var hdr [frameHeaderLen]byte
	hn, pos := 0, 0
	switch d.ph {
	case phStart, phPreface: // phStart: matched is 0
		rest := clientPreface[d.matched:]
		if len(p) < len(rest) || string(p[:len(rest)]) != rest {
			return 0, 0, 0, 0, false
		}
		pos = len(rest)
	case phFrames:
		r := &d.r
		switch r.st {
		case rsHeader:
			hn = copy(hdr[:], r.hbuf[:r.hn])
		case rsFixed, rsBody, rsPad:
			rest := int64(r.fneed-r.fn) + int64(r.body) + int64(r.pad)
			if rest >= int64(len(p)) {
				return 0, 0, 0, 0, false
			}
			pos = int(rest)
		case rsEnd:
		default:
			return 0, 0, 0, 0, false
		}
	default:
		return 0, 0, 0, 0, false
	}
	for {
		need := frameHeaderLen - hn
		if len(p)-pos < need {
			return 0, 0, 0, 0, false
		}
		start := pos
		if hn > 0 {
			start = 0
		}
		copy(hdr[hn:], p[pos:pos+need])
		pos += need
		hn = 0
		length := int64(hdr[0])<<16 | int64(hdr[1])<<8 | int64(hdr[2])
		if hdr[3] == typeData {
			return start, pos, binary.BigEndian.Uint32(hdr[5:9]) & maxWindow, length, true
		}
		if length >= int64(len(p)-pos) {
			return 0, 0, 0, 0, false
		}
		pos += int(length)
	}
}

// ClientAtFrameBoundary reports whether the client's bytes shown so far
// end where a frame of the client's own may go: after the connection
// preface's SETTINGS, between frames, and not inside a header block
// (which CONTINUATION frames must continue without any other frame in
// between).
func (f *Framer) ClientAtFrameBoundary() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cliBoundary()
}

func (f *Framer) cliBoundary() bool {
	d := &f.cli
	return d.ph == phFrames && d.frames && d.r.st == rsHeader && d.r.hn == 0 && d.r.blockStream == 0
}

// RecvWindow is how many bytes of DATA the client allows the target to
// send on stream id now (0: on the connection): its initial window or
// 65535, plus its WINDOW_UPDATEs, minus the target's DATA. A stream that
// is closed or not open has none.
func (f *Framer) RecvWindow(id uint32) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id == 0 {
		return f.recvConn
	}
	if i := f.streams.find(id); i >= 0 {
		return f.recvInitial + f.streams.slots[i].recvChange
	}
	return 0
}

// NeedWindowUpdate reports, without locking, whether the target's DATA
// took a receive window below half its level since WindowUpdates last
// refilled them.
func (f *Framer) NeedWindowUpdate() bool {
	return f.needUpdate.Load() && f.failure.Load() == nil
}

// WindowUpdates appends to b the WINDOW_UPDATE frames a client that reads
// as it goes sends now, and returns it: one for the connection and one for
// each stream the target still sends on whose receive window the target's
// DATA took below half its level, raising the window back to that level.
// A window's level is the largest the client granted: its initial window
// (the connection's is 65535), or more where its own WINDOW_UPDATEs left
// it higher. The frames are shown to the client side as sent: the caller
// writes them at once, before any further client bytes. Nothing is
// appended unless the client's bytes so far end at a frame boundary
// (ClientAtFrameBoundary), or when the framer does not follow the session.
func (f *Framer) WindowUpdates(b []byte) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.needUpdate.Load() || f.failure.Load() != nil || !f.cliBoundary() {
		return b
	}
	start := len(b)
	if f.recvConn < f.recvConnLevel/2 {
		b = appendWindowUpdate(b, 0, f.recvConnLevel-f.recvConn)
	}
	f.streams.removeIf(func(s *stream) bool {
		if f.streamLow(s) {
			b = appendWindowUpdate(b, s.id, f.recvInitial+max(s.recvLevel, 0)-(f.recvInitial+s.recvChange))
		}
		return false
	})
	f.needUpdate.Store(false)
	if len(b) > start {
		f.feed(&f.cli, true, b[start:])
		f.publish()
	}
	return b
}

// appendWindowUpdate appends a WINDOW_UPDATE frame of stream id by incr
// (at most 2^31-1).
func appendWindowUpdate(b []byte, id uint32, incr int64) []byte {
	incr = min(incr, maxWindow)
	b = append(b, 0, 0, 4, typeWindowUpdate, 0)
	b = binary.BigEndian.AppendUint32(b, id)
	return binary.BigEndian.AppendUint32(b, uint32(incr))
}
