/* halfclose.h: the one event layout shared by every BPF program in bpf/ and
 * mirrored once in tracer/record/event.py (ctypes). tests/unit/test_events.py
 * parses this file and fails if the mirror drifts.
 *
 * Widest fields first, so the struct has no hidden padding (80 bytes).
 */
#ifndef HALFCLOSE_H
#define HALFCLOSE_H

enum hc_kind {
	HC_SENDMSG_ENTER = 1,        /* tcp_sendmsg_locked entry; value = size */
	HC_SENDMSG_RETURN = 2,       /* tcp_sendmsg_locked return; value = ret */
	HC_WAIT_CONNECT_ENTER = 3,   /* sk_stream_wait_connect entry */
	HC_WAIT_CONNECT_RETURN = 4,  /* sk_stream_wait_connect return; value = ret */
	HC_STREAM_ERROR_ENTER = 5,   /* sk_stream_error entry; value = err argument */
	HC_STREAM_ERROR_RETURN = 6,  /* sk_stream_error return; value = ret */
	HC_TCP_RESET = 7,            /* tcp_reset entry (an RST was accepted) */
	HC_DONE_WITH_ERROR = 8,      /* tcp_done_with_error entry; value = err argument */
	HC_TCP_DONE = 9,             /* tcp_done entry */
	HC_TCP_DONE_RETURN = 10,     /* tcp_done return */
	HC_TCP_FIN = 11,             /* tcp_fin entry (a FIN was processed) */
	HC_TCP_FIN_RETURN = 12,      /* tcp_fin return */
	HC_SET_STATE = 13,           /* sock:inet_sock_set_state; old_state -> state */
	HC_RESET_TP = 14,            /* tcp:tcp_receive_reset (first thing in tcp_reset) */
	HC_ERROR_REPORT = 15,        /* sock:inet_sk_error_report; value = error; ports; sk: the one tcp_reset ran on */
	HC_SEND_LENGTH = 16,         /* sock:sock_send_length (6.3+): sock_sendmsg returned value */
	HC_WRITE_ENTER = 17,         /* sys_enter_write (raw_syscalls:sys_enter of write/send); fd, value = count, socket fields via the fd */
	HC_WRITE_EXIT = 18,          /* sys_exit_write (raw_syscalls:sys_exit of write/send); fd, value = ret, socket fields via the fd */
	/* 20..29: packets, the RST's sender, reads, signals. SEND_RESET: state is
	 * the sender socket's (0xff: no socket), old_state a timewait socket's
	 * substate, ports the sender's (from the segment it answers). */
	HC_PACKET = 20,              /* net:net_dev_start_xmit; TCP header in sport..tcp_flags, value = payload bytes */
	HC_SEND_RESET = 21,          /* tcp_v4/v6_send_reset or tcp:tcp_send_reset: RST for a segment; sk 0 = no socket */
	HC_ACTIVE_RESET = 22,        /* tcp_send_active_reset: a full socket resets its connection */
	HC_RECVMSG_ENTER = 23,       /* tcp_recvmsg entry; value = len */
	HC_RECVMSG_RETURN = 24,      /* tcp_recvmsg return; value = ret */
	HC_SIGNAL = 25,              /* signal:signal_generate for the client; value = signal, fd = result */
	HC_READ_ENTER = 26,          /* sys_enter_read (raw_syscalls:sys_enter of read); fd, socket fields via the fd */
	HC_READ_EXIT = 27,           /* sys_exit_read (raw_syscalls:sys_exit of read); fd, value = ret */
	HC_GETSOCKOPT_ENTER = 28,    /* sk_getsockopt(SO_ERROR) entry: sk_err there is what it returns; value = optname */
	/* 30..39: watch mode (trace-halfclose watch, bpf/watch/). old_state of
	 * WATCH_CALL_* is the call: HC_CALL_*. */
	HC_WATCH_CALL_ENTER = 30,    /* watch_call entry: a write-like call on a watched socket; fd, value = bytes asked (-1 unknown) */
	HC_WATCH_CALL_EXIT = 31,     /* watch_call exit: that call's result; fd, value = its return value */
	HC_WATCH_ADDR = 32,          /* watch_join: a socket joined the watch; old_state = family, value = 8 address bytes, fd = which 8 */
	HC_WATCH_DESTROY = 33,       /* tcp:tcp_destroy_sock of a watched socket, which leaves the watch */
};


struct hc_event {
	__u64 ts_ns;        /* bpf_ktime_get_ns(): CLOCK_MONOTONIC, comparable with user space */
	__u64 sk;           /* struct sock address: the socket's identity */
	__s64 value;        /* meaning depends on kind, see enum hc_kind */
	__u32 pid;          /* tgid of the task the CPU was running (softirq: whoever it interrupted) */
	__u32 tid;
	__s32 sk_err;       /* sk->sk_err when the event fired */
	__u32 kind;         /* enum hc_kind */
	__s32 fd;           /* WRITE_*: the file descriptor; -1 otherwise */
	__u32 cpu;
	__u32 seq;          /* PACKET: TCP sequence number */
	__u32 ack_seq;      /* PACKET: TCP acknowledgment number */
	__u16 sport;        /* local port, host order */
	__u16 dport;        /* remote port, host order */
	__u8 state;         /* sk->sk_state when the event fired (SET_STATE: the new state) */
	__u8 old_state;     /* SET_STATE only */
	__u8 sk_shutdown;   /* sk->sk_shutdown: RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2 */
	__u8 tcp_flags;     /* PACKET: FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 */
	char comm[16];
};

/* The bytes of one packet of struct hc_event's HC_PACKET, in the second ring
 * buffer (`packets`, bpf/shared/capture.bpf.c), for --pcap and --packetdrill.
 * ts_ns is the HC_PACKET event's own, so the two are paired exactly. data
 * holds the packet from its network header on: the IP and TCP headers and up
 * to 64 bytes of payload, as far as they are in the skb's linear data (on
 * loopback, TCP's payload sits in page fragments, which BPF cannot read: then
 * caplen ends with the TCP header). 280 bytes, no padding. */
struct hc_packet {
	__u64 ts_ns;        /* bpf_ktime_get_ns() of the HC_PACKET event */
	__u32 netns;        /* network namespace inode the packet travelled in */
	__u32 len;          /* the packet's length from the network header (IP total length) */
	__u32 caplen;       /* bytes of data that hold it */
	__u32 cpu;
	__u8 data[256];     /* from the network header: IP (up to 60) + TCP (up to 60) + 64 payload bytes at most;
	                     * 256 so that a length masked with 0xff is in bounds for the verifier */
};

#endif
