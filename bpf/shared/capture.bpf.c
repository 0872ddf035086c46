/* shared/capture.bpf.c: the bytes of each traced packet (--pcap, --packetdrill),
 * as struct hc_packet (bpf/halfclose.h) in a second ring buffer, `packets`.
 *
 * The reproduction's net:net_dev_start_xmit program calls hc_capture() with the
 * HC_PACKET event it has just read, so both carry the same ts_ns. What is read:
 * the skb's linear data from the network header, skb->head + network_header up
 * to skb->head + tail (offsets from BTF; sk_buff_data_t is an offset on 64-bit
 * kernels), at most the IP and TCP headers and 64 payload bytes. Payload in page
 * fragments (skb_shinfo(skb)->frags, where tcp_sendmsg_locked puts what a
 * write sends, net/ipv4/tcp.c 6.1 and 6.12) is not read: a BPF tracing program
 * has no address for a struct page (page_address() needs vmemmap_base and
 * page_offset_base, kernel data that /proc/kallsyms lists only with
 * CONFIG_KALLSYMS_ALL). Then caplen stops at the end of the TCP header, and
 * len still says how long the packet was.
 *
 * Kernel: the BPF ring buffer (5.8+); a bounded variable-size
 * bpf_probe_read_kernel (5.5+).
 */
BPF_RINGBUF_OUTPUT(packets, 64);
BPF_PERCPU_ARRAY(packet_scratch, struct hc_packet, 1); /* 280 bytes: too many for the BPF stack */

#define HC_CAPTURE_PAYLOAD 64

static __always_inline void hc_capture(const void *skb, const struct hc_event *e, u32 netns)
{
	int zero = 0;
	struct hc_packet *p = packet_scratch.lookup(&zero);
	const char *head = 0;
	u16 nh = 0;
	u32 tail = 0, linear, total, want, caplen;
	u8 ip[6] = {};

	if (!p)
		return;
	bpf_probe_read_kernel(&head, sizeof(head), (const char *)skb + OFF_SKB_HEAD);
	bpf_probe_read_kernel(&nh, sizeof(nh), (const char *)skb + OFF_SKB_NETWORK_HEADER);
	bpf_probe_read_kernel(&tail, sizeof(tail), (const char *)skb + OFF_SKB_TAIL);
	if (!head || nh == 0xffff || tail <= nh)
		return;
	linear = tail - nh;
	bpf_probe_read_kernel(ip, sizeof(ip), head + nh);
	if ((ip[0] >> 4) == 4)
		total = (ip[2] << 8) | ip[3];
	else
		total = 40 + ((ip[4] << 8) | ip[5]);
	/* hc_read_tcp left the payload length in e->value: the headers are the rest. */
	want = total - (u32)e->value + HC_CAPTURE_PAYLOAD;
	caplen = want < total ? want : total;
	if (caplen > linear)
		caplen = linear;
	caplen &= 0xff; /* for the verifier: data[] has 256 bytes (IP and TCP headers + 64 are 184 at most) */
	p->ts_ns = e->ts_ns;
	p->netns = netns;
	p->len = total;
	p->cpu = e->cpu;
	p->caplen = caplen;
	bpf_probe_read_kernel(p->data, caplen, head + nh);
	if (packets.ringbuf_output(p, sizeof(*p), 0)) {
		u64 *n = dropped.lookup(&zero);
		if (n)
			(*n)++;
	}
}
