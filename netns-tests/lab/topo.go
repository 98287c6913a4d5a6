package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// NewHosts creates hosts with the given names, in order (see Host).
func (l *Lab) NewHosts(names ...string) ([]*Host, error) {
	out := make([]*Host, 0, len(names))
	for _, n := range names {
		h, err := l.Host(n)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

// AddAddrs adds addresses to interface dev, e.g. a client host's further
// client addresses. Like Link, it refuses any outside 198.18.0.0/15. Many
// addresses go in one `ip -batch`.
func (h *Host) AddAddrs(dev string, addrs ...netip.Prefix) error {
	var batch strings.Builder
	for _, p := range addrs {
		if !InLab(p) {
			return fmt.Errorf("lab: address %s on %s %s: outside the lab range %s", p, h.name, dev, labNet)
		}
		fmt.Fprintf(&batch, "addr add %s dev %s\n", p, dev)
	}
	switch len(addrs) {
	case 0:
		return nil
	case 1:
		if _, err := run(context.Background(), "ip", "-n", h.ns, "addr", "add", addrs[0].String(), "dev", dev); err != nil {
			return fmt.Errorf("lab: add address on %s: %w", h.name, err)
		}
		return nil
	}
	f, err := os.CreateTemp(h.lab.dir, h.name+"-addrs-*.ip")
	if err != nil {
		return fmt.Errorf("lab: add addresses on %s: %w", h.name, err)
	}
	_, err = f.WriteString(batch.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("lab: add addresses on %s: %w", h.name, err)
	}
	if _, err := run(context.Background(), "ip", "-n", h.ns, "-batch", f.Name()); err != nil {
		return fmt.Errorf("lab: add addresses on %s: %w", h.name, err)
	}
	return nil
}

// ForwardPath links near and far (as Link), has far route each of back via
// near's address and makes near forward (ip_forward=1): the way answers to
// addresses behind near (the forged clients in stackcopy's TUN, real
// clients beyond an online host) take from a target on far.
func (l *Lab) ForwardPath(near *Host, nearAddr netip.Prefix, far *Host, farAddr netip.Prefix, back ...netip.Prefix) (nearIf, farIf string, err error) {
	if nearIf, farIf, err = l.Link(near, nearAddr, far, farAddr); err != nil {
		return "", "", err
	}
	for _, p := range back {
		if err := far.AddRoute(p, nearAddr.Addr()); err != nil {
			return "", "", err
		}
	}
	if err := near.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return "", "", err
	}
	return nearIf, farIf, nil
}

// StartServer runs a server program on h (as Start) and returns once a
// socket listens on listen, at most 10 s later (then it stops the
// program and returns an error with its output).
func (h *Host) StartServer(listen netip.AddrPort, name string, args ...string) (*Proc, error) {
	p, err := h.Start(name, args...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.WaitListening(ctx, listen); err != nil {
		_ = p.Stop()
		return nil, fmt.Errorf("%w; %s output:%s", err, p, outputSuffix([]byte(tail(p.Log(), 2048))))
	}
	return p, nil
}

// ServeFiles writes files (name → content) into a new directory under the
// lab directory and serves it with nginx on h at listen (StartNginx). The
// directory is the returned Nginx's Config.Root.
func ServeFiles(h *Host, listen netip.AddrPort, files map[string][]byte) (*Nginx, error) {
	root, err := os.MkdirTemp(h.lab.dir, "www-")
	if err != nil {
		return nil, fmt.Errorf("lab: files for nginx on %s: %w", h.name, err)
	}
	// nginx's workers do not run as root.
	if err := os.Chmod(root, 0o755); err != nil {
		return nil, fmt.Errorf("lab: files for nginx on %s: %w", h.name, err)
	}
	if err := WriteSite(root, files); err != nil {
		return nil, fmt.Errorf("lab: files for nginx on %s: %w", h.name, err)
	}
	return StartNginx(h, listen, root)
}

// SiteTime is the modification time WriteSite gives every file: two
// hosts serving the same files then send the same Last-Modified and ETag,
// as two servers deployed from one build do.
var SiteTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// WriteSite writes files (path → content, subdirectories made as needed)
// under root, each with the modification time SiteTime.
func WriteSite(root string, files map[string][]byte) error {
	for name, b := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
		if err := os.Chtimes(p, SiteTime, SiteTime); err != nil {
			return err
		}
	}
	return nil
}

// WriteKey writes a fresh random relay key (32 bytes, hex) to name in the
// lab directory, readable only by root, and returns its path.
func (l *Lab) WriteKey(name string) (string, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("lab: key %s: %w", name, err)
	}
	path := filepath.Join(l.dir, name)
	if err := os.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("lab: key %s: %w", name, err)
	}
	return path, nil
}
