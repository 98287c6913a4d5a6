package recorder

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// ReadLog parses a recorder log: request records and connection summaries,
// each in log order. A missing file is an empty log (the recorder creates
// it at start, a test may look earlier). A last line without its newline is
// still being written and is ignored.
func ReadLog(path string) ([]Record, []ConnSummary, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("recorder: read log: %w", err)
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		b = nil
	}
	var recs []Record
	var sums []ConnSummary
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for line := 1; sc.Scan(); line++ {
		// Summaries are the lines with total_bytes.
		var probe struct {
			TotalBytes *int64 `json:"total_bytes"`
		}
		if err := json.Unmarshal(sc.Bytes(), &probe); err != nil {
			return recs, sums, fmt.Errorf("recorder: read log %s:%d: %w", path, line, err)
		}
		if probe.TotalBytes != nil {
			var s ConnSummary
			if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
				return recs, sums, fmt.Errorf("recorder: read log %s:%d: %w", path, line, err)
			}
			sums = append(sums, s)
			continue
		}
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return recs, sums, fmt.Errorf("recorder: read log %s:%d: %w", path, line, err)
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		return recs, sums, fmt.Errorf("recorder: read log %s: %w", path, err)
	}
	return recs, sums, nil
}

// WaitLog polls the log until done returns true for its content, or ctx
// ends (then it returns the last content read and the context's error).
// Use it for summaries, which are written when the recorder sees the
// client's close, a moment after the client has exited.
func WaitLog(ctx context.Context, path string, done func([]Record, []ConnSummary) bool) ([]Record, []ConnSummary, error) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		recs, sums, err := ReadLog(path)
		if err != nil {
			return recs, sums, err
		}
		if done(recs, sums) {
			return recs, sums, nil
		}
		select {
		case <-ctx.Done():
			return recs, sums, fmt.Errorf("recorder: wait for log %s: %w", path, ctx.Err())
		case <-tick.C:
		}
	}
}

// ByConn groups records by connection number, each in index order (the
// log order).
func ByConn(recs []Record) map[uint64][]Record {
	m := map[uint64][]Record{}
	for _, r := range recs {
		m[r.Conn] = append(m[r.Conn], r)
	}
	return m
}
