package myframe

// Detect reports whether the first client bytes of a session (maybe only a
// few of them) can start a HandshakeResponse41: a packet of sequence id 1,
// between 32 bytes (an SSLRequest) and 64 KiB long, with CLIENT_PROTOCOL_41
// and the first 19 filler bytes zero, as far as first goes. A false
// positive costs little (the Framer checks every packet and goes Err); a
// false negative loses framing for the whole session. The MySQL protocol
// is server-first, so a replayer normally knows the session from the
// greeting already (DetectServer).
func Detect(first []byte) bool {
	if len(first) == 0 {
		return false
	}
	if len(first) >= 3 {
		if n := le24(first); n < 32 || n > 1<<16 {
			return false
		}
	}
	if len(first) >= 4 && first[3] != 1 {
		return false
	}
	if len(first) >= 6 && first[5]&(capProtocol41>>8) == 0 {
		return false
	}
	for i := 4 + 9; i < 4+28 && i < len(first); i++ {
		if first[i] != 0 {
			return false
		}
	}
	return true
}

// DetectServer reports whether the first server bytes of a session (maybe
// only a few of them) can start a protocol-10 greeting: a packet of
// sequence id 0, at most 64 KiB long, whose payload starts with 0x0a and a
// printable server version.
func DetectServer(first []byte) bool {
	if len(first) == 0 {
		return false
	}
	n := 1 << 16
	if len(first) >= 3 {
		if n = le24(first); n < 17 || n > 1<<16 {
			return false
		}
	}
	if len(first) >= 4 && first[3] != 0 {
		return false
	}
	if len(first) >= 5 && first[4] != 10 {
		return false
	}
	for i := 5; i < len(first) && i < 4+n; i++ {
		if first[i] == 0 {
			break
		}
		if first[i] < 0x20 || first[i] > 0x7e {
			return false
		}
	}
	return true
}

func le24(b []byte) int { return int(b[0]) | int(b[1])<<8 | int(b[2])<<16 }
