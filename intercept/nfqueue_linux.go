package intercept

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/stackcopy/stackcopy/internal/mmsg"
	"github.com/stackcopy/stackcopy/internal/quietio"
)

// NFQueueConfig configures OpenNFQueue.
type NFQueueConfig struct {
	// Queue is the queue number of the iptables rule (--queue-num).
	Queue uint16
	// QueueLen is the most packets the kernel holds for our verdicts
	// (default 4096). Beyond it the kernel drops new packets, or accepts
	// them with FailOpen.
	QueueLen uint32
	// CopyRange is how many bytes of each packet the kernel copies to us;
	// 0 copies whole packets (up to 65535 bytes).
	CopyRange uint32
	// FailOpen sets NFQA_CFG_F_FAIL_OPEN: packets that find the queue (or
	// our socket) full are accepted instead of dropped.
	FailOpen bool
	Logger   *slog.Logger // nil: discard
}

// NFQueue is a Source reading an NFQUEUE. Every packet it returns must get
// a verdict, in the order Next returned them (the kernel takes runs of
// equal verdicts as one batch message, so a packet's verdict may go out
// with the next Next or SetVerdict; an error from SetVerdict can concern
// the earlier packets of the run). It binds with NFQA_CFG_F_GSO: TSO/GSO
// super-packets arrive whole (one verdict per super-packet) instead of
// being segmented in software first.
type NFQueue struct {
	nf    *nfqueue.Nfqueue
	queue uint16
	log   *slog.Logger

	// ch holds packets between the netlink reader and Next. Its capacity
	// is the kernel queue's length: every packet in it still awaits its
	// verdict, so the kernel never hands over more, and the reader never
	// blocks.
	ch chan Packet

	// The reader: one recvmmsg takes every queued packet message (up to
	// nfqBatch) into batch; readerDone is closed when it returns.
	rc         syscall.RawConn
	w          *quietio.Conn // the verdicts, on rc
	batch      *mmsg.Batch
	readerDone chan struct{}

	done     chan struct{} // closed when reading stopped: Close or failure
	doneOnce sync.Once
	errMu    sync.Mutex
	err      error
	closing  atomic.Bool

	// Verdicts are batched: a run of packets with one verdict is decided
	// by one NFQNL_MSG_VERDICT_BATCH (every queued packet up to an id),
	// sent when the verdict changes, before Next waits, and at Close.
	vmu            sync.Mutex
	pendingID      uint32
	pendingVerdict Verdict
	pendingN       int
	vbuf           [verdictMsgLen]byte

	packets, verdictErrs, overflow, recvDrops, malformed atomic.Uint64

	finalMu     sync.Mutex
	finalKernel uint64 // kernel drops read at Close
	finalSet    bool
}

// OpenNFQueue binds to an NFQUEUE. It needs CAP_NET_ADMIN; the packets
// arrive once an iptables rule queues them, e.g.
//
//	iptables -I OUTPUT -p tcp --sport 80 -j NFQUEUE --queue-num 0
func OpenNFQueue(cfg NFQueueConfig) (*NFQueue, error) {
	if cfg.QueueLen == 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	copyRange := cfg.CopyRange
	if copyRange == 0 || copyRange > 0xffff {
		copyRange = 0xffff
	}
	flags := uint32(nfqueue.NfQaCfgFlagGSO)
	if cfg.FailOpen {
		flags |= nfqueue.NfQaCfgFlagFailOpen
	}
	what := fmt.Sprintf("nfqueue %d", cfg.Queue)
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:      cfg.Queue,
		MaxQueueLen:  cfg.QueueLen,
		MaxPacketLen: copyRange,
		Copymode:     nfqueue.NfQnlCopyPacket,
		Flags:        flags,
		AfFamily:     unix.AF_INET,
	})
	if err != nil {
		return nil, nfqueueError(what, "open netlink socket", err)
	}
	q := &NFQueue{
		nf:    nf,
		queue: cfg.Queue,
		log:   cfg.Logger,
		ch:    make(chan Packet, cfg.QueueLen),
		done:  make(chan struct{}),
	}
	// A full socket buffer makes the kernel drop (or, fail-open, accept)
	// the packet and count it; it must not fail our reads.
	if err := nf.SetOption(netlink.NoENOBUFS, true); err != nil {
		nf.Close()
		return nil, nfqueueError(what, "NETLINK_NO_ENOBUFS", err)
	}
	// Room for a full queue in the socket: each message is the packet
	// copy plus netlink attributes, accounted at about twice its size.
	rcvbuf := min(max(int(cfg.QueueLen)*(int(copyRange)+512)*2, 1<<20), 256<<20)
	if err := setRcvbufForce(nf.Con, rcvbuf); err != nil {
		nf.Close()
		return nil, nfqueueError(what, "socket receive buffer", err)
	}

	if err := q.bind(flags, copyRange, cfg.QueueLen); err != nil {
		nf.Close()
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EBUSY) {
			// The kernel answers EPERM to a bind, root or not, when
			// another socket has the queue: say who has it, not "needs
			// root" to root.
			if taken := queueTaken(cfg.Queue); taken != "" {
				return nil, fmt.Errorf("%s: bind: %s", what, taken)
			}
		}
		return nil, nfqueueError(what, "bind", err)
	}
	rc, err := nf.Con.SyscallConn()
	if err != nil {
		nf.Close()
		return nil, nfqueueError(what, "socket", err)
	}
	q.rc = rc
	q.w = quietio.NewRaw(rc)
	q.batch = mmsg.New(nfqBatch, nfqBufSize)
	q.readerDone = make(chan struct{})
	go q.read()
	return q, nil
}

// procQueues is where the kernel lists the bound NFQUEUEs of this network
// namespace.
const procQueues = "/proc/net/netfilter/nfnetlink_queue"

// queueTaken says who holds queue, or "" if it is not bound.
func queueTaken(queue uint16) string {
	f, err := os.Open(procQueues)
	if err != nil {
		return ""
	}
	defer f.Close()
	portID, free, ok := parseQueueOwner(io.LimitReader(f, 1<<20), queue)
	if !ok {
		return ""
	}
	// A process's first netlink socket gets its PID as port ID, so the
	// owner is most likely that process.
	owner := fmt.Sprintf("netlink port %d", portID)
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", portID)); err == nil && portID > 0 {
		owner = fmt.Sprintf("process %d (%s), by its netlink port ID", portID, strings.TrimSpace(string(comm)))
	}
	return fmt.Sprintf("queue %d is already bound by %s (see %s); stop that program, or give this intercept a free queue, e.g. -q %d, and queue to it: iptables ... -j NFQUEUE --queue-num %d",
		queue, owner, procQueues, free, free)
}

// parseQueueOwner reads the nfnetlink_queue listing (queue, port ID,
// ...): the port ID bound to queue, if any, and the lowest queue number
// nobody has bound.
func parseQueueOwner(r io.Reader, queue uint16) (portID uint32, free uint16, ok bool) {
	used := make(map[uint64]bool)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		n, err1 := strconv.ParseUint(fs[0], 10, 16)
		p, err2 := strconv.ParseUint(fs[1], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		used[n] = true
		if n == uint64(queue) {
			portID, ok = uint32(p), true
		}
	}
	for used[uint64(free)] && free < 65535 {
		free++
	}
	return portID, free, ok
}

func nfqueueError(what, step string, err error) error {
	switch {
	case (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)) && os.Geteuid() == 0:
		return fmt.Errorf("%s: %s: %w (refused although running as root: another program may hold the queue, or a security module or a user namespace without CAP_NET_ADMIN denies it)", what, step, err)
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%s: %s: %w (needs root or CAP_NET_ADMIN)", what, step, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%s: %s: %w (another program, another intercept perhaps, already reads this queue)", what, step, err)
	}
	return fmt.Errorf("%s: %s: %w", what, step, err)
}

// setRcvbufForce sets SO_RCVBUFFORCE, which as root exceeds rmem_max.
func setRcvbufForce(c *netlink.Conn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	return serr
}

// fail records the first error and ends Next's waiting.
func (q *NFQueue) fail(err error) {
	q.errMu.Lock()
	if q.err == nil {
		q.err = err
	}
	q.errMu.Unlock()
	q.doneOnce.Do(func() { close(q.done) })
}

func (q *NFQueue) error() error {
	q.errMu.Lock()
	defer q.errMu.Unlock()
	return q.err
}

// Next returns the next queued packet.
func (q *NFQueue) Next(ctx context.Context) (Packet, error) {
	if q.closing.Load() {
		return Packet{}, fmt.Errorf("nfqueue %d: %w", q.queue, net.ErrClosed)
	}
	select {
	case p := <-q.ch:
		q.packets.Add(1)
		return p, nil
	default:
	}
	// Nothing waiting: decide what is pending before sleeping.
	if err := q.flush(); err != nil {
		return Packet{}, err
	}
	select {
	case p := <-q.ch:
		q.packets.Add(1)
		return p, nil
	case <-ctx.Done():
		return Packet{}, ctx.Err()
	case <-q.done:
		return Packet{}, q.error()
	}
}

// verdict records v for packet id; packets come in id order, so a run of
// equal verdicts is sent as one batch.
func (q *NFQueue) verdict(id uint32, v Verdict) error {
	if v != Accept && v != Drop {
		return fmt.Errorf("nfqueue %d: invalid verdict %d", q.queue, v)
	}
	q.vmu.Lock()
	defer q.vmu.Unlock()
	var err error
	if q.pendingN > 0 && v != q.pendingVerdict {
		err = q.flushLocked()
	}
	q.pendingID, q.pendingVerdict = id, v
	q.pendingN++
	if q.pendingN >= maxVerdictBatch {
		if ferr := q.flushLocked(); err == nil {
			err = ferr
		}
	}
	return err
}

// maxVerdictBatch bounds how long a run of equal verdicts waits.
const maxVerdictBatch = 64

// flush sends the pending verdicts.
func (q *NFQueue) flush() error {
	q.vmu.Lock()
	defer q.vmu.Unlock()
	return q.flushLocked()
}

func (q *NFQueue) flushLocked() error {
	if q.pendingN == 0 {
		return nil
	}
	err := q.sendVerdict(&q.vbuf, q.pendingID, q.pendingVerdict == Drop, q.pendingN > 1)
	n := q.pendingN
	q.pendingN = 0
	if err != nil {
		q.verdictErrs.Add(uint64(n))
		return fmt.Errorf("nfqueue %d: verdict %v for %d packets up to %d: %w", q.queue, q.pendingVerdict, n, q.pendingID, err)
	}
	return nil
}

// Close sends pending verdicts and unbinds from the queue; the kernel
// drops what it still holds.
func (q *NFQueue) Close() error {
	if !q.closing.CompareAndSwap(false, true) {
		return nil
	}
	ferr := q.flush()
	if n, ok := q.kernelDrops(); ok {
		q.finalMu.Lock()
		q.finalKernel, q.finalSet = n, true
		q.finalMu.Unlock()
	}
	q.fail(fmt.Errorf("nfqueue %d: %w", q.queue, net.ErrClosed))
	// Wake the reader, wait for it, then close: the kernel unbinds the
	// queue from a socket that goes away.
	_ = q.nf.Con.SetReadDeadline(time.Unix(1, 0))
	<-q.readerDone
	err := q.nf.Close()
	if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
		err = nil
	}
	if err == nil {
		err = ferr
	}
	return err
}

// Stats returns the counters. KernelDrops comes from
// /proc/net/netfilter/nfnetlink_queue (queue full or socket full).
func (q *NFQueue) Stats() SourceStats {
	st := SourceStats{
		Packets:       q.packets.Load(),
		VerdictErrors: q.verdictErrs.Load(),
		Skipped:       q.malformed.Load(),
	}
	q.finalMu.Lock()
	final, set := q.finalKernel, q.finalSet
	q.finalMu.Unlock()
	if set {
		st.KernelDrops = final
	} else if n, ok := q.kernelDrops(); ok {
		st.KernelDrops = n
	}
	st.KernelDrops += q.overflow.Load() + q.recvDrops.Load()
	return st
}

// kernelDrops reads queue_dropped + user_dropped of our queue from
// /proc/net/netfilter/nfnetlink_queue, whose lines are: queue number, peer
// port id, queue total, copy mode, copy range, queue dropped, user
// dropped, last id, 1.
func (q *NFQueue) kernelDrops() (uint64, bool) {
	f, err := os.Open("/proc/net/netfilter/nfnetlink_queue")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	return parseQueueDrops(f, q.queue)
}

func parseQueueDrops(r io.Reader, queue uint16) (uint64, bool) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 7 || fs[0] != strconv.Itoa(int(queue)) {
			continue
		}
		qd, err1 := strconv.ParseUint(fs[5], 10, 64)
		ud, err2 := strconv.ParseUint(fs[6], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, false
		}
		return qd + ud, true
	}
	return 0, false
}
