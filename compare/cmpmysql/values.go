package cmpmysql

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/stackcopy/stackcopy/compare"
)

// column is what a result set's rows need of a column definition.
type column struct {
	name     string
	typ      byte
	unsigned bool
}

// typeNames are the protocol's column types (MYSQL_TYPE_*).
var typeNames = map[byte]string{
	0: "DECIMAL", 1: "TINY", 2: "SHORT", 3: "LONG", 4: "FLOAT", 5: "DOUBLE", 6: "NULL",
	7: "TIMESTAMP", 8: "LONGLONG", 9: "INT24", 10: "DATE", 11: "TIME", 12: "DATETIME",
	13: "YEAR", 14: "NEWDATE", 15: "VARCHAR", 16: "BIT", 17: "TIMESTAMP2", 18: "DATETIME2",
	19: "TIME2", 20: "TYPED_ARRAY", 242: "VECTOR", 245: "JSON", 246: "NEWDECIMAL", 247: "ENUM",
	248: "SET", 249: "TINY_BLOB", 250: "MEDIUM_BLOB", 251: "LONG_BLOB", 252: "BLOB",
	253: "VAR_STRING", 254: "STRING", 255: "GEOMETRY",
}

// appendTypeName appends typeName's text to b.
func (c column) appendTypeName(b []byte) []byte {
	if n, ok := typeNames[c.typ]; ok {
		b = append(b, n...)
	} else {
		b = fmt.Appendf(b, "TYPE_%d", c.typ)
	}
	if c.unsigned {
		b = append(b, " UNSIGNED"...)
	}
	return b
}

// columnDef reads a column definition (Protocol::ColumnDefinition41):
// catalog, schema, table, org_table, name, org_name, MariaDB's extended
// metadata when negotiated, then the fixed fields.
func columnDef(m []byte, caps uint64) (column, bool) {
	var name []byte
	for i := range 6 {
		s, k, ok := lenencStr(m)
		if !ok {
			return column{}, false
		}
		if i == 4 {
			name = s
		}
		m = m[k:]
	}
	if caps&capMariaExtMetadata != 0 {
		_, k, ok := lenencStr(m)
		if !ok {
			return column{}, false
		}
		m = m[k:]
	}
	// length of the fixed fields (0x0c), charset (2), column length (4),
	// type (1), flags (2), decimals (1).
	if len(m) < 1+2+4+1+2 {
		return column{}, false
	}
	return column{name: string(name), typ: m[7], unsigned: le16(m[8:])&0x20 != 0}, true
}

// binaryValue reads one value of the binary row format (and of
// COM_STMT_EXECUTE's parameters) and renders it as the text protocol
// would.
func binaryValue(b []byte, c column) (string, int, bool) {
	fixed := func(n int) bool { return len(b) >= n }
	switch c.typ {
	case 1: // TINY
		if !fixed(1) {
			return "", 0, false
		}
		if c.unsigned {
			return strconv.FormatUint(uint64(b[0]), 10), 1, true
		}
		return strconv.FormatInt(int64(int8(b[0])), 10), 1, true
	case 2, 13: // SHORT, YEAR
		if !fixed(2) {
			return "", 0, false
		}
		v := binary.LittleEndian.Uint16(b)
		if c.unsigned || c.typ == 13 {
			return strconv.FormatUint(uint64(v), 10), 2, true
		}
		return strconv.FormatInt(int64(int16(v)), 10), 2, true
	case 3, 9: // LONG, INT24
		if !fixed(4) {
			return "", 0, false
		}
		v := binary.LittleEndian.Uint32(b)
		if c.unsigned {
			return strconv.FormatUint(uint64(v), 10), 4, true
		}
		return strconv.FormatInt(int64(int32(v)), 10), 4, true
	case 8: // LONGLONG
		if !fixed(8) {
			return "", 0, false
		}
		v := binary.LittleEndian.Uint64(b)
		if c.unsigned {
			return strconv.FormatUint(v, 10), 8, true
		}
		return strconv.FormatInt(int64(v), 10), 8, true
	case 4: // FLOAT
		if !fixed(4) {
			return "", 0, false
		}
		return strconv.FormatFloat(float64(math.Float32frombits(binary.LittleEndian.Uint32(b))), 'g', -1, 32), 4, true
	case 5: // DOUBLE
		if !fixed(8) {
			return "", 0, false
		}
		return strconv.FormatFloat(math.Float64frombits(binary.LittleEndian.Uint64(b)), 'g', -1, 64), 8, true
	case 6: // NULL
		return "NULL", 0, true
	case 7, 10, 12, 14: // TIMESTAMP, DATE, DATETIME, NEWDATE
		if !fixed(1) || len(b) < 1+int(b[0]) {
			return "", 0, false
		}
		n := int(b[0])
		d := b[1 : 1+n]
		var y, mo, da, h, mi, s int
		var us uint32
		switch n {
		case 0:
		case 4, 7, 11:
			y, mo, da = int(le16(d)), int(d[2]), int(d[3])
			if n >= 7 {
				h, mi, s = int(d[4]), int(d[5]), int(d[6])
			}
			if n == 11 {
				us = le32(d[7:])
			}
		default:
			return "", 0, false
		}
		out := fmt.Sprintf("%04d-%02d-%02d", y, mo, da)
		if c.typ != 10 && c.typ != 14 {
			out += fmt.Sprintf(" %02d:%02d:%02d", h, mi, s)
			if us != 0 {
				out += fmt.Sprintf(".%06d", us)
			}
		}
		return out, 1 + n, true
	case 11: // TIME
		if !fixed(1) || len(b) < 1+int(b[0]) {
			return "", 0, false
		}
		n := int(b[0])
		d := b[1 : 1+n]
		switch n {
		case 0:
			return "00:00:00", 1, true
		case 8, 12:
			sign := ""
			if d[0] == 1 {
				sign = "-"
			}
			h := uint64(le32(d[1:]))*24 + uint64(d[5])
			out := fmt.Sprintf("%s%02d:%02d:%02d", sign, h, d[6], d[7])
			if n == 12 {
				out += fmt.Sprintf(".%06d", le32(d[8:]))
			}
			return out, 1 + n, true
		}
		return "", 0, false
	}
	// Everything else is a length-encoded string.
	s, k, ok := lenencStr(b)
	if !ok {
		return "", 0, false
	}
	return compare.Value(s), k, true
}

// textRow renders a text-protocol row: length-encoded strings, 0xFB for
// NULL.
func textRow(m []byte, n int) ([]string, bool) {
	vals := make([]string, 0, n)
	for range n {
		if len(m) > 0 && m[0] == 0xfb {
			vals = append(vals, "NULL")
			m = m[1:]
			continue
		}
		s, k, ok := lenencStr(m)
		if !ok {
			return nil, false
		}
		vals = append(vals, compare.Value(s))
		m = m[k:]
	}
	return vals, len(m) == 0
}

// binaryRow renders a binary-protocol row: a 0x00 header, the NULL
// bitmap (offset 2), the values.
func binaryRow(m []byte, cols []column) ([]string, bool) {
	nb := (len(cols) + 9) / 8
	if len(m) < 1+nb || m[0] != 0 {
		return nil, false
	}
	nulls := m[1 : 1+nb]
	m = m[1+nb:]
	vals := make([]string, 0, len(cols))
	for i, c := range cols {
		if bit := i + 2; nulls[bit/8]&(1<<(bit%8)) != 0 {
			vals = append(vals, "NULL")
			continue
		}
		v, k, ok := binaryValue(m, c)
		if !ok {
			return nil, false
		}
		vals = append(vals, v)
		m = m[k:]
	}
	return vals, len(m) == 0
}

// renderRow joins a row's values for a field: bounded per value, and as a
// digest when the whole is longer than limit.
func renderRow(vals []string, limit int) string {
	s := strings.Join(vals, " | ")
	if len(s) > limit {
		return compare.Digest([]byte(s))
	}
	return s
}
