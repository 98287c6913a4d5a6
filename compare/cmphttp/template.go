package cmphttp

import "strings"

// maxKey bounds a request key: a key is a report group's name, and a path
// that long is not a route anyone reads.
const maxKey = 256

// requestKey is a request's group: the method and the path template.
func requestKey(method, target string) string {
	if method == "CONNECT" {
		// The target is host:port, a value rather than a route.
		return "CONNECT {authority}"
	}
	k := method + " " + pathTemplate(target)
	if len(k) > maxKey {
		k = cutUTF8(k, maxKey) + "…"
	}
	return k
}

// pathTemplate turns a request target into a route: the query and fragment
// go, an absolute URI loses its scheme and authority, and path segments
// that look like identifiers become "{id}", so that /users/42/orders and
// /users/43/orders fall in one group.
func pathTemplate(target string) string {
	if i := strings.IndexAny(target, "?#"); i >= 0 {
		target = target[:i]
	}
	if target == "*" {
		return "*"
	}
	if i := strings.Index(target, "://"); i >= 0 && !strings.Contains(target[:i], "/") {
		target = target[i+3:]
		if j := strings.IndexByte(target, '/'); j >= 0 {
			target = target[j:]
		} else {
			target = "/"
		}
	}
	if target == "" {
		return "/"
	}
	segs := strings.Split(target, "/")
	for i, s := range segs {
		if looksLikeID(s) {
			segs[i] = "{id}"
		}
	}
	return strings.Join(segs, "/")
}

// looksLikeID says whether a path segment is a value rather than a route
// name: all digits; a UUID; hex of 8 or more characters with a digit in
// it (hashes, object ids); 16 or more letters and digits mixing both
// (tokens); base64url of 20 or more characters that has a digit or as many
// capitals as random text has (so that long camelCase or dashed words stay
// names).
func looksLikeID(s string) bool {
	if s == "" {
		return false
	}
	var digits, upper, lower, hex, other, b64 int
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			digits++
			hex++
		case c >= 'a' && c <= 'z':
			lower++
			if c <= 'f' {
				hex++
			}
		case c >= 'A' && c <= 'Z':
			upper++
			if c <= 'F' {
				hex++
			}
		case c == '-' || c == '_':
			b64++
		case c == '=' && i >= len(s)-2:
			b64++ // padding
		default:
			other++
		}
	}
	n := len(s)
	switch {
	case digits == n:
		return true
	case isUUID(s):
		return true
	case hex == n && n >= 8 && digits > 0:
		return true
	case digits+upper+lower == n && n >= 16 && digits > 0 && upper+lower > 0:
		return true
	case other == 0 && n >= 20 && (digits > 0 || upper > 0 && lower > 0 && upper*4 >= upper+lower):
		return true
	}
	return false
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !isHex(c) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// cutUTF8 cuts s to at most n bytes without splitting a UTF-8 sequence.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}
