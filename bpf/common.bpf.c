/* common.bpf.c: what every program of both modes uses: the ring buffer, the
 * lost-event counter, and one way to submit an event.
 *
 * The first part of every joined text. bcc rewrites map calls (map.lookup())
 * and finds programs only in its main source text, so tracer/collect/sources.py
 * joins this part, the mode's parts and the backend's part into one text per
 * (mode, backend), each opened by a #line marker naming its file. Only
 * halfclose.h, sock_read.h and args.h, which hold no maps, are #included.
 *
 * Kernel: the BPF ring buffer (5.8+) and bpf_probe_read_kernel (5.5+).
 */
#include <uapi/linux/ptrace.h>
#include "sock_read.h"

BPF_PERCPU_ARRAY(dropped, u64, 1); /* events lost because the ring buffer was full */
/* Pages of the ring buffer: 64 (256 KiB) for the reproduction's one connection; a watch
 * passes a larger -DHC_RINGBUF_PAGES (a busy server: some 100,000 events a second). */
#ifndef HC_RINGBUF_PAGES
#define HC_RINGBUF_PAGES 64
#endif
BPF_RINGBUF_OUTPUT(events, HC_RINGBUF_PAGES);

/* A full ring buffer loses the event: counted, never silent. */
static __always_inline void hc_submit(struct hc_event *e)
{
	int zero = 0;

	if (events.ringbuf_output(e, sizeof(*e), 0)) {
		u64 *n = dropped.lookup(&zero);
		if (n)
			(*n)++;
	}
}

static __always_inline int hc_emit(u32 kind, const void *sk, s64 value)
{
	struct hc_event e = {};

	hc_fill(&e, kind, sk);
	e.value = value;
	hc_submit(&e);
	return 0;
}
