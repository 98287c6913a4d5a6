package main

import (
	"testing"

	"github.com/google/pprof/profile"
)

// TestStageOf: a sample belongs to its innermost stackcopy or gVisor
// frame, whatever runtime or standard-library frames sit below it.
func TestStageOf(t *testing.T) {
	sample := func(names ...string) *profile.Sample { // leaf first
		s := &profile.Sample{}
		for _, n := range names {
			s.Location = append(s.Location, &profile.Location{Line: []profile.Line{{Function: &profile.Function{Name: n}}}})
		}
		return s
	}
	for _, tc := range []struct {
		s    *profile.Sample
		want string
	}{
		{sample("runtime.memmove", "github.com/stackcopy/stackcopy/capture.decodeIPv4", "github.com/stackcopy/stackcopy/mirror.pump.func1"), "capture"},
		{sample("internal/runtime/syscall/linux.Syscall6", "golang.org/x/sys/unix.writev", "github.com/stackcopy/stackcopy/wire.(*TUN).write", "github.com/stackcopy/stackcopy/netstack.(*linkEndpoint).writeLoop"), "wire"},
		{sample("gvisor.dev/gvisor/pkg/tcpip/transport/tcp.(*sender).sendData", "github.com/stackcopy/stackcopy/replay.(*player).write"), "stack"},
		{sample("runtime.gcBgMarkWorker"), "runtime"},
		{sample("github.com/stackcopy/stackcopy/relay.(*Conn).read"), "relay"},
		{sample("github.com/stackcopy/stackcopy/myframe.(*Framer).write", "github.com/stackcopy/stackcopy/replay.(*Replayer).Event"), "replay"},
		{sample("internal/runtime/syscall/linux.Syscall6", "github.com/stackcopy/stackcopy/internal/quietio.(*Conn).call", "github.com/stackcopy/stackcopy/internal/quietio.(*Conn).Read", "bufio.(*Reader).Read", "github.com/stackcopy/stackcopy/relay.(*channel).readLoop"), "relay"},
		{sample("github.com/stackcopy/stackcopy/internal/framekit.(*Block).Feed", "github.com/stackcopy/stackcopy/respframe.(*Framer).Feed"), "replay"},
	} {
		if got := stageOf(tc.s); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.s.Location[0].Line[0].Function.Name, got, tc.want)
		}
	}
}
