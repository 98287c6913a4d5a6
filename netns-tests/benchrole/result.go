// Package benchrole holds what the bench's helper roles (cmd/bench run as
// `bench -role NAME` inside the lab's namespaces) write for the bench to
// read: the server roles' connection log and status file, and the client
// roles' result on stdout. Encoder and decoder share these types.
package benchrole

// ConnRecord is one line of a server role's -log: a finished connection.
type ConnRecord struct {
	Remote  string  `json:"remote"`
	Bytes   int64   `json:"bytes"`   // client bytes read
	Seconds float64 `json:"seconds"` // accept → client EOF
	OK      bool    `json:"ok"`      // answered and closed without error
	Err     string  `json:"err,omitempty"`
}

// ServerStatus is what a server role writes to -status every 100 ms.
type ServerStatus struct {
	Accepted  int64 `json:"accepted"`
	Open      int64 `json:"open"`       // accepted, not yet closed
	Answered  int64 `json:"answered"`   // answer written (ever)
	IdleOpen  int64 `json:"idle_open"`  // answered and still open
	Completed int64 `json:"completed"`  // answered, client EOF, closed cleanly
	Failed    int64 `json:"failed"`     // ended with an error
	Reset     int64 `json:"reset_kill"` // closed by SIGUSR1
}

// ClientResult is what a kernel client role (upload, short) prints: one
// JSON object on stdout.
type ClientResult struct {
	Seconds   float64  `json:"seconds"`
	Bytes     int64    `json:"bytes,omitempty"`
	Completed int      `json:"completed"`
	Failed    int      `json:"failed"`
	Errors    []string `json:"errors,omitempty"` // the first few
	Answer    string   `json:"answer,omitempty"`
}

// LiveLoadResult is what the liveload role prints: one JSON object on
// stdout.
type LiveLoadResult struct {
	Seconds   float64  `json:"seconds"`
	Completed int      `json:"completed"`
	Failed    int      `json:"failed"`
	Rate      float64  `json:"rate"` // completed / the scheduled duration (or longer, if late)
	Errors    []string `json:"errors,omitempty"`
}
