package doctor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stackcopy/stackcopy/hostnet"
)

// Capabilities by number (linux/capability.h), as bits of CapEff.
const (
	capNetAdmin = 12
	capNetRaw   = 13
)

var capNames = map[int]string{capNetAdmin: "CAP_NET_ADMIN", capNetRaw: "CAP_NET_RAW"}

// parseCapEff reads the effective capability set from the text of
// /proc/self/status.
func parseCapEff(status []byte) (uint64, error) {
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("CapEff %q: %w", strings.TrimSpace(v), err)
			}
			return n, nil
		}
	}
	return 0, errors.New("no CapEff line")
}

// checkCapabilities checks that the process holds the capabilities the
// run needs (why: what each is for), whether as root or not.
func (r *Report) checkCapabilities(program string, need map[int]string) {
	status, err := os.ReadFile("/proc/self/status")
	var eff uint64
	if err == nil {
		eff, err = parseCapEff(status)
	}
	if err != nil {
		r.warn("capabilities", "", "cannot read the effective capabilities: %v", err)
		return
	}
	who := fmt.Sprintf("uid %d", os.Geteuid())
	if os.Geteuid() == 0 {
		who = "root (uid 0)"
	}
	var have, missing []string
	for _, c := range []int{capNetAdmin, capNetRaw} {
		why, ok := need[c]
		if !ok {
			continue
		}
		if eff&(1<<c) != 0 {
			have = append(have, capNames[c])
		} else {
			missing = append(missing, capNames[c]+" ("+why+")")
		}
	}
	if len(missing) > 0 {
		var caps []string
		for _, c := range []int{capNetAdmin, capNetRaw} {
			if _, ok := need[c]; ok {
				caps = append(caps, strings.ToLower(capNames[c]))
			}
		}
		r.fail("capabilities", fmt.Sprintf("run as root, or grant only these: setcap %s+ep $(command -v %s) (systemd: AmbientCapabilities=, see deploy/systemd)", strings.Join(caps, ","), program),
			"%s lacks %s", who, strings.Join(missing, ", "))
		return
	}
	if len(have) == 0 {
		r.ok("capabilities", "%s; this configuration needs no capability", who)
		return
	}
	note := ""
	if os.Geteuid() == 0 {
		note = "; full root is not needed: these capabilities are enough (deploy/systemd runs without root)"
	}
	r.ok("capabilities", "%s, effective: %s%s", who, strings.Join(have, ", "), note)
}

// checkTool checks that a program the run executes is installed.
func (r *Report) checkTool(name, pkg, why string, need bool) {
	path, err := exec.LookPath(name)
	if err == nil {
		r.ok(name, "%s (%s)", path, why)
		return
	}
	if need {
		r.fail(name, "apt-get install "+pkg, "not found in PATH; %s", why)
		return
	}
	r.warn(name, "apt-get install "+pkg, "not found in PATH; %s", why)
}

// checkInterface checks a capture interface and what its offloads mean
// for the capture.
func (r *Report) checkInterface(role, name string) {
	if name == "any" {
		r.info(role+" any", "captures on every interface; offloads are checked per named interface only")
		return
	}
	st, err := hostnet.Link(name)
	switch {
	case err != nil:
		r.fail(role+" "+name, "", "%v", err)
		return
	case !st.Exists:
		r.fail(role+" "+name, "ip -br link  # then pass an existing interface", "no such interface")
		return
	case !st.Up:
		r.fail(role+" "+name, "ip link set "+name+" up", "interface is down: nothing arrives on it")
		return
	}
	r.ok(role+" "+name, "%s, up (operstate %s), MTU %d", st.Type, st.Oper, st.MTU)
	off, err := hostnet.ReadOffloads(name)
	if err != nil {
		r.info("offloads "+name, "not readable (%v); ethtool -k %s shows them", err, name)
		return
	}
	var on []string
	if off.GRO {
		on = append(on, "GRO")
	}
	if off.LRO {
		on = append(on, "LRO")
	}
	if off.TSO {
		on = append(on, "TSO/GSO")
	}
	if len(on) == 0 {
		r.ok("offloads "+name, "GRO, LRO and TSO off: the capture sees wire-sized segments")
		return
	}
	// Merged segments are not a problem for the capture (whole super-packets
	// up to 256 KiB are kept and reassembled by sequence number); they are
	// worth knowing when comparing packet counts with tcpdump on the wire.
	r.ok("offloads "+name, "%s on: the capture sees merged super-packets (up to 64 KiB, BIG TCP 256 KiB) instead of wire segments; they are captured whole and reassembled, nothing to change (ethtool -K %s gro off lro off only to count wire packets)",
		strings.Join(on, ", "), name)
}

// checkKey loads the relay key as the run would, and checks the file's
// permissions beyond what loading enforces.
func (r *Report) checkKey(file, env string, load func(file, env string) error) bool {
	name := "relay key"
	if err := load(file, env); err != nil {
		path := file
		if path == "" {
			path = "/etc/stackcopy/relay.key"
		}
		fix := "head -c 32 /dev/urandom | base64 > " + path + "; chmod 600 " + path + "  # the same key on every stackcopy and intercept"
		switch {
		case file != "" && errors.Is(err, os.ErrNotExist):
		case file != "" && (strings.Contains(err.Error(), "chmod") || strings.Contains(err.Error(), "mode 0")):
			fix = "chmod 600 " + file
		case file == "":
			fix = "pass --key-file FILE (mode 0600), or export " + env + " in the service's environment"
		}
		// The fix goes on its own; drop the copy LoadKey's message embeds.
		detail, _, _ := strings.Cut(strings.TrimPrefix(err.Error(), "relay key: "), "; run: ")
		r.fail(name, fix, "%s", detail)
		return false
	}
	if file == "" {
		r.ok(name, "from $%s (environment)", env)
		return true
	}
	fi, err := os.Stat(file)
	if err != nil {
		r.fail(name, "", "%v", err)
		return false
	}
	perm := fi.Mode().Perm()
	if perm&0o077 != 0 {
		r.warn(name, "chmod 600 "+file, "%s has mode %04o: readable beyond its owner; anyone who can read it can register as a mirror or pose as an intercept", file, perm)
		return true
	}
	owner := ""
	if st, ok := fi.Sys().(*unix.Stat_t); ok && int(st.Uid) != os.Geteuid() && os.Geteuid() != 0 {
		owner = fmt.Sprintf(", owned by uid %d (not this user)", st.Uid)
	}
	r.ok(name, "%s, mode %04o%s", file, perm, owner)
	return true
}

// checkSpillDir checks the directory sessions that fall behind spill
// into: present, writable, and not in memory.
func (r *Report) checkSpillDir(dir string) {
	name := "spill dir"
	fi, err := os.Stat(dir)
	if err != nil {
		r.fail(name, "mkdir -p "+dir+"  # or --spill-dir DIR, or --spill-max 0", "%v", err)
		return
	}
	if !fi.IsDir() {
		r.fail(name, "--spill-dir DIR with a directory", "%s is not a directory", dir)
		return
	}
	// AT_EACCESS: the effective ids decide, as for the run's own create.
	if err := unix.Faccessat(unix.AT_FDCWD, dir, unix.W_OK|unix.X_OK, unix.AT_EACCESS); err != nil {
		fix := "chown to the service user, or --spill-dir DIR writable by it (systemd: ReadWritePaths=)"
		if errors.Is(err, unix.EROFS) {
			fix = "a writable --spill-dir (systemd ProtectSystem=strict: add it to ReadWritePaths=)"
		}
		r.fail(name, fix, "%s is not writable: %v", dir, err)
		return
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err == nil && fs.Type == unix.TMPFS_MAGIC {
		r.warn(name, "--spill-dir /var/tmp  # or another disk-backed directory", "%s is tmpfs: spilled bytes would take memory, the thing spilling saves", dir)
		return
	}
	if err := unix.Statfs(dir, &fs); err == nil {
		r.ok(name, "%s writable, %d MiB free", dir, fs.Bavail*uint64(fs.Bsize)>>20)
		return
	}
	r.ok(name, "%s writable", dir)
}

// listener is a TCP socket in LISTEN state from /proc/net/tcp{,6}.
type listener struct {
	port  int
	inode string
}

// parseListeners reads the LISTEN sockets of a /proc/net/tcp table.
func parseListeners(table []byte) []listener {
	var out []listener
	sc := bufio.NewScanner(bytes.NewReader(table))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		if len(f) < 10 || f[3] != "0A" {
			continue
		}
		_, portHex, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		port, err := strconv.ParseUint(portHex, 16, 16)
		if err != nil {
			continue
		}
		out = append(out, listener{port: int(port), inode: f[9]})
	}
	return out
}

// portListener finds who listens on TCP port (any address): the socket's
// owner pid and command when /proc lets us see them. found is false when
// nobody listens.
func portListener(port int) (found bool, pid int, comm string) {
	var inodes []string
	for _, t := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, l := range parseListeners(b) {
			if l.port == port {
				inodes = append(inodes, l.inode)
			}
		}
	}
	if len(inodes) == 0 {
		return false, 0, ""
	}
	pid = socketOwner(inodes)
	return true, pid, processName(pid)
}

// socketOwner finds the process holding one of the socket inodes by
// reading /proc/PID/fd links; 0 when none is visible to us.
func socketOwner(inodes []string) int {
	want := map[string]bool{}
	for _, in := range inodes {
		want["socket:["+in+"]"] = true
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/fd")
	for _, fdDir := range procs {
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && want[l] {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(fdDir)))
				return pid
			}
		}
	}
	return 0
}

func processName(pid int) string {
	if pid <= 0 {
		return ""
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
