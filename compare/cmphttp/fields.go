package cmphttp

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/stackcopy/stackcopy/compare"
)

// A hfield is one header field as the message carries it.
type hfield struct {
	name, value string
}

// A body gathers one message's body as it arrives: whole while it fits in
// Limits.Body, hashed always (so that the digest of a large body needs no
// copy of it), and its start for the sample.
type body struct {
	lim    int
	keep   []byte
	over   bool // longer than lim: keep is dropped
	hash   compare.Hasher
	sample []byte
	slim   int
	// hashOnly: the body's content matters only as its length and hash
	// (not JSON, not compressed), so no more is kept than a short value
	// shows inline.
	hashOnly bool
}

func newBody(lim compare.Limits) body {
	return body{lim: lim.Body, hash: compare.NewHasher(), slim: lim.Sample}
}

// hashOnlyBody says whether a body with these header fields is compared
// by its length and hash alone: it is neither JSON (read by path) nor
// compressed (compared decoded).
func hashOnlyBody(hdr []hfield) bool {
	if enc, ok := headerValue(hdr, "content-encoding"); ok && strings.TrimSpace(enc) != "" && !strings.EqualFold(strings.TrimSpace(enc), "identity") {
		return false
	}
	ct, _ := headerValue(hdr, "content-type")
	return !isJSON(ct)
}

// inlineMax is the longest body compare.Value renders as itself; a longer
// one it renders as its length and hash, which the Hasher gives.
const inlineMax = 200

func (b *body) add(p []byte) {
	if len(p) == 0 {
		return
	}
	b.hash.Feed(p)
	if !b.over {
		switch {
		case b.hashOnly && len(b.keep)+len(p) > inlineMax:
			b.over, b.keep = true, nil
		case len(b.keep)+len(p) <= b.lim:
			b.keep = append(b.keep, p...)
		default:
			b.over = true
			b.keep = nil
		}
	}
	if n := b.slim - len(b.sample); n > 0 {
		b.sample = append(b.sample, p[:min(n, len(p))]...)
	}
}

// hopByHop are the response fields that describe the connection rather
// than the answer: they differ with the transport (keep-alive, chunking,
// HTTP/2) while the application's answer is the same.
func hopByHop(name string) bool {
	switch name {
	case "connection", "keep-alive", "transfer-encoding", "proxy-connection":
		return true
	}
	return false
}

// answerFields are an answer's comparable fields: "status", then
// "header:<name>" by name, then "trailer:<name>" by name, then the body's
// fields (see bodyFields).
func answerFields(lim compare.Limits, status int, hdr, trailers []hfield, b *body, names map[string]string) ([]compare.Field, *compare.Detail) {
	out := []compare.Field{{Name: "status", Value: strconv.Itoa(status)}}
	out = appendHeaderFields(out, "header:", hdr, names)
	out = appendHeaderFields(out, "trailer:", trailers, names)
	body, detail := bodyFields(lim, hdr, b)
	return append(out, body...), detail
}

// appendHeaderFields adds one field per header name, sorted by name (the
// order of different fields carries no meaning), the values of a repeated
// field joined in order. Set-Cookie keeps only the cookies' names, sorted:
// their values are new every run. names caches field names by header name
// as sent (nil: no cache): every answer of a connection repeats them.
func appendHeaderFields(out []compare.Field, prefix string, hdr []hfield, names map[string]string) []compare.Field {
	type group struct {
		name string // lower case
		vals []string
	}
	var buf [32]group
	groups := buf[:0]
	for _, f := range hdr {
		name := lowerASCII(f.name)
		if hopByHop(name) || name == "" || name[0] == ':' {
			continue
		}
		i := slices.IndexFunc(groups, func(g group) bool { return g.name == name })
		if i < 0 {
			i = len(groups)
			groups = append(groups, group{name: name})
		}
		groups[i].vals = append(groups[i].vals, f.value)
	}
	slices.SortFunc(groups, func(a, b group) int { return strings.Compare(a.name, b.name) })
	for _, g := range groups {
		var v string
		switch {
		case g.name == "set-cookie":
			cookies := make([]string, len(g.vals))
			for i, c := range g.vals {
				n, _, _ := strings.Cut(c, "=")
				cookies[i] = strings.TrimSpace(n)
			}
			slices.Sort(cookies)
			v = strings.Join(cookies, "; ")
		case len(g.vals) == 1:
			v = g.vals[0]
		default:
			v = strings.Join(g.vals, ", ")
		}
		out = append(out, compare.Field{Name: fieldName(names, prefix, g.name), Value: compare.ValueString(v)})
	}
	return out
}

// fieldName is prefix+name, from the cache when it has it.
func fieldName(names map[string]string, prefix, name string) string {
	if names == nil {
		return prefix + name
	}
	key := prefix + name
	if n, ok := names[key]; ok {
		return n
	}
	if len(names) < maxNames {
		names[key] = key
	}
	return key
}

// maxNames bounds a connection's cache of header field names.
const maxNames = 256

// lowerASCII is s in lower case, s itself (no copy) when it already is.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' || c >= 0x80 {
			return strings.ToLower(s)
		}
	}
	return s
}

// headerValue is the first value of the field name (lowercase) in hdr.
func headerValue(hdr []hfield, name string) (string, bool) {
	for _, f := range hdr {
		if strings.EqualFold(f.name, name) {
			return f.value, true
		}
	}
	return "", false
}

// bodyFields are the body's fields. A JSON body (by Content-Type) that is
// kept whole and parses is flattened into "json:$..." fields; one that does
// not parse is "body" plus "body_json_error". Any other body is "body": the
// bytes when short, their length and hash otherwise. A gzip or deflate
// body is compared decoded when it and its decoding fit in Limits.Body,
// since two servers compress the same answer differently.
// lazyJSON is the largest JSON body kept whole until the comparison asks
// for its paths; larger ones are read at once, which keeps a pending
// answer's memory to its fields.
const lazyJSON = 64 << 10

func bodyFields(lim compare.Limits, hdr []hfield, b *body) ([]compare.Field, *compare.Detail) {
	if b.over {
		return []compare.Field{{Name: "body", Value: b.hash.Value()}}, nil
	}
	data := b.keep
	if enc, ok := headerValue(hdr, "content-encoding"); ok && len(data) > 0 {
		if d, ok := decompress(strings.ToLower(strings.TrimSpace(enc)), data, lim.Body); ok {
			data = d
		} else if len(data) > 0 && isCompressed(enc) {
			// Could not decode within the limits: compare the
			// compressed bytes.
			return []compare.Field{{Name: "body", Value: compare.Value(data)}}, nil
		}
	}
	ct, _ := headerValue(hdr, "content-type")
	if len(data) > 0 && isJSON(ct) {
		if len(data) <= lazyJSON {
			// Most answers have the same body as the other side's: its
			// value (or hash) is enough, and the paths are read only when
			// it differs.
			unordered := lim.UnorderedArrays
			return []compare.Field{{Name: "body", Value: compare.Value(data)}},
				&compare.Detail{Of: "body", Fields: func() []compare.Field { return jsonBodyFields(data, unordered) }}
		}
		return jsonBodyFields(data, lim.UnorderedArrays), nil
	}
	return []compare.Field{{Name: "body", Value: compare.Value(data)}}, nil
}

// jsonBodyFields are a JSON body's paths, or its bytes and why it is not
// JSON.
func jsonBodyFields(data []byte, unordered bool) []compare.Field {
	fs, err := jsonFields(data, unordered)
	if err != nil {
		return []compare.Field{
			{Name: "body", Value: compare.Value(data)},
			{Name: "body_json_error", Value: compare.Value([]byte(err.Error()))},
		}
	}
	return fs
}

func isCompressed(enc string) bool {
	switch strings.ToLower(strings.TrimSpace(enc)) {
	case "gzip", "x-gzip", "deflate":
		return true
	}
	return false
}

// decompress decodes a gzip or deflate body, at most limit bytes of it.
func decompress(enc string, data []byte, limit int) ([]byte, bool) {
	var r io.Reader
	switch enc {
	case "gzip", "x-gzip":
		z, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, false
		}
		r = z
	case "deflate":
		// RFC 9110's deflate is zlib; some servers send raw deflate.
		if z, err := zlib.NewReader(bytes.NewReader(data)); err == nil {
			r = z
		} else {
			r = flate.NewReader(bytes.NewReader(data))
		}
	default:
		return nil, false
	}
	d, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil || len(d) > limit {
		return nil, false
	}
	return d, true
}

// isJSON says whether a Content-Type is JSON: application/json, text/json
// and application/<anything>+json.
func isJSON(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || mt == "text/json" ||
		strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}

// redactedHeader says whether a field's value is a secret in a sample.
func redactedHeader(name string, response bool) bool {
	if response {
		return strings.EqualFold(name, "set-cookie")
	}
	return strings.EqualFold(name, "authorization") || strings.EqualFold(name, "proxy-authorization") || strings.EqualFold(name, "cookie")
}

// renderSample is a message's sample: its start line and fields (secrets
// redacted unless ShowSecrets), an empty line and the body's start.
func renderSample(lim compare.Limits, line string, hdr []hfield, response bool, bodyStart []byte) string {
	if lim.Sample == 0 {
		return ""
	}
	// One allocation for the rendering (compare.Sample copies it once
	// more into the string).
	var sb bytes.Buffer
	sb.Grow(min(lim.Sample, len(line)+64*len(hdr)+len(bodyStart)) + 4)
	sb.WriteString(line)
	sb.WriteString("\r\n")
	for _, f := range hdr {
		if sb.Len() > lim.Sample {
			break
		}
		v := f.value
		if !lim.ShowSecrets && redactedHeader(f.name, response) {
			v = compare.Redacted
		}
		sb.WriteString(f.name)
		sb.WriteString(": ")
		sb.WriteString(v)
		sb.WriteString("\r\n")
	}
	sb.WriteString("\r\n")
	if n := lim.Sample - sb.Len(); n > 0 {
		sb.Write(bodyStart[:min(n, len(bodyStart))])
	}
	return compare.Sample(sb.Bytes(), lim.Sample)
}
