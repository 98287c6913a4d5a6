package intercept

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The nfnetlink_queue protocol (linux/netfilter/nfnetlink_queue.h) as far
// as NFQueue speaks it itself: binding the queue, reading packets and
// sending verdicts. go-nfqueue opens the socket. Its reader is not used:
// it peeks at each message before reading it (two recvmsg per packet,
// half of intercept's CPU under load), where one recvmmsg here takes
// every packet message queued, up to nfqBatch. Nor are its verdicts: each
// built its message in fresh allocations and set a write deadline, where
// one fixed 32-byte message is written here without telling the
// scheduler (see package quietio).
const (
	nfnlSubsysQueue = 3
	nfqnlMsgPacket  = nfnlSubsysQueue << 8 // NFQNL_MSG_PACKET is 0
	nfqnlMsgConfig  = nfnlSubsysQueue<<8 | 2

	nfqnlMsgVerdict      = nfnlSubsysQueue<<8 | 1
	nfqnlMsgVerdictBatch = nfnlSubsysQueue<<8 | 3
	nfqaVerdictHdr       = 2
	nfDrop, nfAccept     = 0, 1

	nfqaPacketHdr = 1
	nfqaPayload   = 10

	nfqaCfgCmd         = 1
	nfqaCfgParams      = 2
	nfqaCfgQueueMaxLen = 3
	nfqaCfgMask        = 4
	nfqaCfgFlags       = 5

	nfqnlCfgCmdBind    = 1
	nfqnlCfgCmdPfBind  = 3
	nfqnlCfgCmdPfUnbnd = 4

	nfqnlCopyPacket = 2

	nlaTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
)

const (
	// nfqBatch is how many packet messages one receive may take.
	nfqBatch = 32
	// nfqBufSize holds one packet message: a copy of up to 65535 bytes
	// (a GSO super-packet) and its attributes.
	nfqBufSize = 64<<10 + 4096
)

// bind binds the socket to the queue: the address family, the queue, the
// copy mode, flags and queue length, each acknowledged by the kernel.
func (q *NFQueue) bind(flags, copyRange, queueLen uint32) error {
	cmd := func(c uint8, pf uint16) []byte { return []byte{c, 0, byte(pf >> 8), byte(pf)} }
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	steps := []struct {
		what  string
		queue uint16 // the message's res_id
		attrs []netlink.Attribute
	}{
		// Kernels before 3.8 need the family unbound first; later ones
		// ignore both commands.
		{"unbind family", 0, []netlink.Attribute{{Type: nfqaCfgCmd, Data: cmd(nfqnlCfgCmdPfUnbnd, unix.AF_INET)}}},
		{"bind family", 0, []netlink.Attribute{{Type: nfqaCfgCmd, Data: cmd(nfqnlCfgCmdPfBind, unix.AF_INET)}}},
		{"bind queue", q.queue, []netlink.Attribute{{Type: nfqaCfgCmd, Data: cmd(nfqnlCfgCmdBind, unix.AF_INET)}}},
		{"copy mode", q.queue, []netlink.Attribute{{Type: nfqaCfgParams, Data: append(be32(copyRange), nfqnlCopyPacket)}}},
		{"flags and queue length", q.queue, []netlink.Attribute{
			{Type: nfqaCfgFlags, Data: be32(flags)},
			{Type: nfqaCfgMask, Data: be32(flags)},
			{Type: nfqaCfgQueueMaxLen, Data: be32(queueLen)},
		}},
	}
	for _, st := range steps {
		attrs, err := netlink.MarshalAttributes(st.attrs)
		if err != nil {
			return fmt.Errorf("%s: %w", st.what, err)
		}
		// nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id
		// (big-endian).
		data := append([]byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, byte(st.queue >> 8), byte(st.queue)}, attrs...)
		if _, err := q.nf.Con.Execute(netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(nfqnlMsgConfig), Flags: netlink.Request | netlink.Acknowledge},
			Data:   data,
		}); err != nil {
			return fmt.Errorf("%s: %w", st.what, err)
		}
	}
	return nil
}

// read receives packet messages until Close or a receive error, handing
// each packet to Next through ch.
func (q *NFQueue) read() {
	defer close(q.readerDone)
	for {
		var n int
		var errno unix.Errno
		err := q.rc.Read(func(fd uintptr) bool {
			n, errno = q.batch.Recv(fd, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
			return errno != unix.EAGAIN
		})
		switch {
		case q.closing.Load():
			return
		case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
			continue // a deadline meant for Close, which is not closing after all
		case err != nil:
			q.fail(fmt.Errorf("nfqueue %d: receive: %w", q.queue, err))
			return
		case errno == unix.ENOBUFS:
			// The socket overflowed (NETLINK_NO_ENOBUFS is set, so this is
			// rare): the kernel dropped packets and counts them.
			q.recvDrops.Add(1)
			continue
		case errno != 0:
			q.fail(fmt.Errorf("nfqueue %d: receive: %w", q.queue, errno))
			return
		}
		for i := range n {
			if q.batch.Size(i) > nfqBufSize {
				q.malformed.Add(1) // cannot happen with a 64 KiB copy range
				continue
			}
			q.messages(q.batch.Data(i))
		}
	}
}

// messages takes the netlink messages of one datagram.
func (q *NFQueue) messages(b []byte) {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			q.malformed.Add(1)
			return
		}
		typ := binary.NativeEndian.Uint16(b[4:])
		body := b[unix.NLMSG_HDRLEN:l]
		switch typ {
		case nfqnlMsgPacket:
			q.packet(body)
		case unix.NLMSG_ERROR:
			// The kernel refused a verdict (they are sent unacknowledged,
			// so only failures come back): an unknown packet id, or a
			// queue that went away.
			if len(body) >= 4 && int32(binary.NativeEndian.Uint32(body)) != 0 {
				q.verdictErrs.Add(1)
			}
		}
		b = b[min(len(b), nlmsgAlign(l)):]
	}
}

// packet takes one NFQNL_MSG_PACKET: its id and a copy of its payload.
func (q *NFQueue) packet(b []byte) {
	if len(b) < 4 {
		q.malformed.Add(1)
		return
	}
	var (
		id      uint32
		idOK    bool
		payload []byte
	)
	for a := b[4:]; len(a) >= unix.NLA_HDRLEN; { // past the nfgenmsg
		l := int(binary.NativeEndian.Uint16(a))
		if l < unix.NLA_HDRLEN || l > len(a) {
			q.malformed.Add(1)
			return
		}
		v := a[unix.NLA_HDRLEN:l]
		switch binary.NativeEndian.Uint16(a[2:]) & nlaTypeMask {
		case nfqaPacketHdr:
			if len(v) >= 4 {
				id, idOK = binary.BigEndian.Uint32(v), true
			}
		case nfqaPayload:
			payload = v
		}
		a = a[min(len(a), nlaAlign(l)):]
	}
	if !idOK {
		q.malformed.Add(1)
		return
	}
	// The receive buffer is reused: the packet needs its own bytes until
	// it is relayed.
	p := Packet{Data: bytes.Clone(payload), v: q, id: id}
	select {
	case q.ch <- p:
	default:
		// Cannot happen while ch is as long as the kernel queue; if it
		// does, decide now rather than stall the queue. Dropping is the
		// safe side: a real client's TCP retransmits, a forged one's
		// answer never leaks.
		q.overflow.Add(1)
		var buf [verdictMsgLen]byte
		_ = q.sendVerdict(&buf, id, true, false)
	}
}

// verdictMsgLen is a verdict message's length: netlink header, nfgenmsg,
// and the one attribute, struct nfqnl_msg_verdict_hdr.
const verdictMsgLen = unix.NLMSG_HDRLEN + 4 + 4 + 8

// sendVerdict decides packet id (with batch, every queued packet up to
// it), building the message in buf. The kernel handles it before the
// write returns, so the write never waits.
func (q *NFQueue) sendVerdict(buf *[verdictMsgLen]byte, id uint32, drop, batch bool) error {
	_, err := q.w.Write(appendVerdict(buf[:0], q.queue, id, drop, batch))
	return err
}

// appendVerdict appends the verdict message for packet id of queue.
func appendVerdict(b []byte, queue uint16, id uint32, drop, batch bool) []byte {
	typ := uint16(nfqnlMsgVerdict)
	if batch {
		typ = nfqnlMsgVerdictBatch
	}
	v := uint32(nfAccept)
	if drop {
		v = nfDrop
	}
	b = binary.NativeEndian.AppendUint32(b, verdictMsgLen)
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, unix.NLM_F_REQUEST)
	b = binary.NativeEndian.AppendUint32(b, 0) // sequence
	b = binary.NativeEndian.AppendUint32(b, 0) // port id: the kernel fills it
	b = append(b, unix.AF_UNSPEC, unix.NFNETLINK_V0, byte(queue>>8), byte(queue))
	b = binary.NativeEndian.AppendUint16(b, 4+8)
	b = binary.NativeEndian.AppendUint16(b, nfqaVerdictHdr)
	b = binary.BigEndian.AppendUint32(b, v)
	return binary.BigEndian.AppendUint32(b, id)
}

func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
func nlaAlign(n int) int   { return (n + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1) }
