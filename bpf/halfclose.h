/* halfclose.h: the one event layout shared by every BPF program in bpf/ and
 * mirrored once in tracer/events.py (ctypes). tests/unit/test_events.py
 * parses this file and fails if the mirror drifts.
 *
 * Widest fields first, so the struct has no hidden padding (72 bytes).
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
	HC_ERROR_REPORT = 15,        /* sock:inet_sk_error_report; value = error; no sk, ports only */
	HC_SEND_LENGTH = 16,         /* sock:sock_send_length (6.3+): sock_sendmsg returned value */
	HC_WRITE_ENTER = 17,         /* syscalls:sys_enter_write; fd, value = count, socket fields via the fd */
	HC_WRITE_EXIT = 18,          /* syscalls:sys_exit_write; fd, value = ret, socket fields via the fd */
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
	__u16 sport;        /* local port, host order */
	__u16 dport;        /* remote port, host order */
	__u8 state;         /* sk->sk_state when the event fired (SET_STATE: the new state) */
	__u8 old_state;     /* SET_STATE only */
	__u8 sk_shutdown;   /* sk->sk_shutdown: RCV_SHUTDOWN 1 | SEND_SHUTDOWN 2 */
	__u8 pad;
	char comm[16];
};

#endif
