/* sock_read.h: read struct sock fields and filter to the traced sockets,
 * without any kernel struct header.
 *
 * Why no <net/sock.h>: the installed headers may belong to another kernel
 * (on a microVM running 6.18 only 6.1 headers exist) and Debian 12's bcc 0.26
 * cannot compile <net/sock.h> from 6.12. So every field is read at a byte
 * offset that tracer/kernel/offsets.py took from the running kernel's BTF and passed
 * in as a -D macro:
 *   OFF_SKC_STATE, OFF_SK_ERR, OFF_SKC_NUM, OFF_SKC_DPORT, OFF_SKC_NET,
 *   OFF_NET_INUM, and OFF_SK_SHUTDOWN with SK_SHUTDOWN_SHIFT/SK_SHUTDOWN_MASK
 *   (sk_shutdown was a 2-bit bitfield before it became a u8); for packets
 *   OFF_SKB_HEAD, OFF_SKB_NETWORK_HEADER, OFF_SKB_DEV, OFF_DEV_NET, and
 *   OFF_TW_SUBSTATE for a timewait socket; for the raw tracepoints, what their
 *   perf records used to carry: OFF_INET_SPORT, OFF_SK_PROTOCOL, OFF_TASK_PID
 *   (tracer/kernel/offsets.py lists them all).
 *
 * No maps here: bcc rewrites map calls (map.lookup()) only in its main
 * source text, so the filters and the ring buffer live in the parts that
 * tracer/collect/sources.py joins into it (common.bpf.c, <mode>/common.bpf.c).
 */
#ifndef SOCK_READ_H
#define SOCK_READ_H

#include "halfclose.h"

static __always_inline u32 hc_sk_netns(const void *sk)
{
	const void *net = 0;
	u32 inum = 0;

	bpf_probe_read_kernel(&net, sizeof(net), (const char *)sk + OFF_SKC_NET);
	if (!net)
		return 0;
	bpf_probe_read_kernel(&inum, sizeof(inum), (const char *)net + OFF_NET_INUM);
	return inum;
}

/* The network namespace a packet travels in: skb->dev->nd_net. */
static __always_inline u32 hc_skb_netns(const void *skb)
{
	const char *dev = 0, *net = 0;
	u32 inum = 0;

	bpf_probe_read_kernel(&dev, sizeof(dev), (const char *)skb + OFF_SKB_DEV);
	if (!dev)
		return 0;
	bpf_probe_read_kernel(&net, sizeof(net), dev + OFF_DEV_NET);
	if (!net)
		return 0;
	bpf_probe_read_kernel(&inum, sizeof(inum), net + OFF_NET_INUM);
	return inum;
}

/* The TCP header of a packet (IPv4 or IPv6 without extension headers) into
 * e: ports, seq, ack_seq, flags, and the payload length in e->value.
 * Returns 0 when it is not TCP. */
static __always_inline int hc_read_tcp(struct hc_event *e, const void *skb)
{
	const char *head = 0;
	u16 nh = 0;
	u8 ip[40] = {};
	u8 th[14] = {};
	u32 iplen, thoff, total;

	bpf_probe_read_kernel(&head, sizeof(head), (const char *)skb + OFF_SKB_HEAD);
	bpf_probe_read_kernel(&nh, sizeof(nh), (const char *)skb + OFF_SKB_NETWORK_HEADER);
	if (!head || nh == 0xffff)
		return 0;
	bpf_probe_read_kernel(ip, sizeof(ip), head + nh);
	if ((ip[0] >> 4) == 4) {
		if (ip[9] != 6)
			return 0;
		iplen = (ip[0] & 0xf) * 4;
		total = (ip[2] << 8) | ip[3];
	} else if ((ip[0] >> 4) == 6) {
		if (ip[6] != 6)
			return 0;
		iplen = 40;
		total = 40 + ((ip[4] << 8) | ip[5]);
	} else {
		return 0;
	}
	bpf_probe_read_kernel(th, sizeof(th), head + nh + (iplen & 0x3f));
	e->sport = (th[0] << 8) | th[1];
	e->dport = (th[2] << 8) | th[3];
	e->seq = ((u32)th[4] << 24) | (th[5] << 16) | (th[6] << 8) | th[7];
	e->ack_seq = ((u32)th[8] << 24) | (th[9] << 16) | (th[10] << 8) | th[11];
	thoff = (th[12] >> 4) * 4;
	e->tcp_flags = th[13];
	e->value = (s64)total - iplen - thoff;
	return 1;
}

/* sk->sk_protocol (a u16 since 5.6; offsets.py refuses an older bitfield). */
static __always_inline u16 hc_sk_protocol(const void *sk)
{
	u16 protocol = 0;

	bpf_probe_read_kernel(&protocol, sizeof(protocol), (const char *)sk + OFF_SK_PROTOCOL);
	return protocol;
}

/* task->pid: the thread's id, as signal_generate's and task_newtask's records had it. */
static __always_inline u32 hc_task_pid(const void *task)
{
	u32 pid = 0;

	bpf_probe_read_kernel(&pid, sizeof(pid), (const char *)task + OFF_TASK_PID);
	return pid;
}

/* The ports as inet_sock_set_state's and inet_sk_error_report's records had
 * them: ntohs(inet->inet_sport), ntohs(inet->inet_dport) (include/trace/events/sock.h,
 * 6.1 and 6.12). Moving to CLOSE unhashes the socket and zeroes skc_num
 * (inet_put_port) before the state tracepoint fires; inet_sport keeps the port. */
static __always_inline void hc_record_ports(const void *sk, u16 *sport, u16 *dport)
{
	u16 s = 0, d = 0;

	bpf_probe_read_kernel(&s, sizeof(s), (const char *)sk + OFF_INET_SPORT);
	bpf_probe_read_kernel(&d, sizeof(d), (const char *)sk + OFF_SKC_DPORT);
	*sport = __builtin_bswap16(s);
	*dport = __builtin_bswap16(d);
}

static __always_inline void hc_read_sock(struct hc_event *e, const void *sk)
{
	const char *p = (const char *)sk;
	u32 shut = 0;
	u16 dport = 0;

	bpf_probe_read_kernel(&e->state, sizeof(e->state), p + OFF_SKC_STATE);
	bpf_probe_read_kernel(&e->sk_err, sizeof(e->sk_err), p + OFF_SK_ERR);
	bpf_probe_read_kernel(&shut, sizeof(shut), p + OFF_SK_SHUTDOWN);
	e->sk_shutdown = (shut >> SK_SHUTDOWN_SHIFT) & SK_SHUTDOWN_MASK;
	bpf_probe_read_kernel(&e->sport, sizeof(e->sport), p + OFF_SKC_NUM);
	bpf_probe_read_kernel(&dport, sizeof(dport), p + OFF_SKC_DPORT);
	e->dport = __builtin_bswap16(dport); /* skc_dport is network order */
}

/* Fill what every event carries. Events are built on the stack (64 bytes)
 * and copied by hc_submit(): a reserved ring-buffer slot would have to be
 * cleared with memset, which clang may turn into a call BPF cannot make. */
static __always_inline void hc_fill(struct hc_event *e, u32 kind, const void *sk)
{
	u64 id = bpf_get_current_pid_tgid();

	e->ts_ns = bpf_ktime_get_ns();
	e->fd = -1;
	e->cpu = bpf_get_smp_processor_id();
	e->sk = (u64)sk;
	e->kind = kind;
	e->pid = id >> 32;
	e->tid = (u32)id;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	if (sk)
		hc_read_sock(e, sk);
}

#endif
