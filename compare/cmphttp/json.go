package cmphttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/stackcopy/stackcopy/compare"
)

// maxPath bounds a JSON field's path: deeper values are compared as the
// subtree at that depth (its canonical JSON), so that a deeply nested or
// long-keyed document cannot make field names of unbounded total size.
const maxPath = 256

// jsonFields flattens a JSON document into fields named by JSONPath:
//
//   - a scalar is one field, its value in JSON form (strings quoted):
//     "json:$.user.name" = `"ann"`, "json:$.count" = "3" (numbers as
//     written), "json:$.x" = "null";
//   - an object contributes its members, keys sorted; a key that is not
//     plain letters, digits, '_', '-' or '$' is bracketed: `$["a.b"]`; an
//     empty object is one field with the value "{}";
//   - an array contributes "<path>.length" = its length, then its
//     elements "<path>[0]"...; with unordered, elements are sorted by their
//     canonical JSON first, so a reordering compares equal.
//
// Beyond maxJSONFields, the remaining fields are one "json:(more)" digest.
func jsonFields(data []byte, unordered bool) ([]compare.Field, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	f := flattener{unordered: unordered, more: compare.NewHasher()}
	f.walk(v, "$")
	if f.nmore > 0 {
		f.out = append(f.out, compare.Field{Name: "json:(more)", Value: strconv.Itoa(f.nmore) + " fields " + f.more.Value()})
	}
	return f.out, nil
}

type flattener struct {
	unordered bool
	out       []compare.Field
	nmore     int
	more      compare.Hasher
}

func (f *flattener) emit(path, value string) {
	if len(f.out) < maxJSONFields {
		f.out = append(f.out, compare.Field{Name: "json:" + path, Value: compare.Value([]byte(value))})
		return
	}
	f.nmore++
	f.more.Feed([]byte(path))
	f.more.Feed([]byte{'='})
	f.more.Feed([]byte(value))
	f.more.Feed([]byte{'\n'})
}

func (f *flattener) walk(v any, path string) {
	if len(path) > maxPath {
		// Too deep: the rest of the subtree is one field, named by a
		// cut path and the whole path's hash so that names stay unique.
		h := compare.NewHasher()
		h.Feed([]byte(path))
		f.emit(cutUTF8(path, maxPath)+"…"+h.Value()[strings.LastIndexByte(h.Value(), '=')+1:], string(f.canon(nil, v)))
		return
	}
	switch v := v.(type) {
	case map[string]any:
		if len(v) == 0 {
			f.emit(path, "{}")
			return
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			f.walk(v[k], path+keySegment(k))
		}
	case []any:
		f.emit(path+".length", strconv.Itoa(len(v)))
		for i, e := range f.elements(v) {
			f.walk(e, path+"["+strconv.Itoa(i)+"]")
		}
	default:
		f.emit(path, string(f.canon(nil, v)))
	}
}

// elements are an array's elements in the order they are compared in.
func (f *flattener) elements(v []any) []any {
	if !f.unordered || len(v) < 2 {
		return v
	}
	type elem struct {
		key string
		v   any
	}
	es := make([]elem, len(v))
	for i, e := range v {
		es[i] = elem{string(f.canon(nil, e)), e}
	}
	slices.SortStableFunc(es, func(a, b elem) int { return strings.Compare(a.key, b.key) })
	out := make([]any, len(v))
	for i, e := range es {
		out[i] = e.v
	}
	return out
}

// canon appends v's canonical JSON: keys sorted, no spaces, numbers as
// written, and arrays sorted when comparing unordered.
func (f *flattener) canon(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, v)
	case json.Number:
		return append(b, v...)
	case string:
		return appendJSONString(b, v)
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = f.canon(b, v[k])
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		if !f.unordered {
			for i, e := range v {
				if i > 0 {
					b = append(b, ',')
				}
				b = f.canon(b, e)
			}
			return append(b, ']')
		}
		// Each element's canonical form once, sorted: rendering the
		// sorted elements again would redo every level below, twice
		// per level.
		es := make([]string, len(v))
		for i, e := range v {
			es[i] = string(f.canon(nil, e))
		}
		slices.Sort(es)
		for i, e := range es {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, e...)
		}
		return append(b, ']')
	}
	return b
}

// keySegment is the path segment of an object key.
func keySegment(k string) string {
	plain := k != ""
	for i := 0; i < len(k) && plain; i++ {
		c := k[i]
		plain = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '$'
	}
	if plain {
		return "." + k
	}
	return "[" + string(appendJSONString(nil, k)) + "]"
}

// appendJSONString appends s as a JSON string, without the HTML escaping
// of encoding/json (the value is for people and comparison).
func appendJSONString(b []byte, s string) []byte {
	const hexd = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexd[c>>4], hexd[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}
