/* watch/entries.bpf.c: what the watch's kprobe and fentry programs share: a
 * filtered entry whose return is reported too (shared/stash.bpf.c), the
 * write-like call in progress getting its socket from tcp_sendmsg_locked, and
 * a call's start.
 *
 * Joined into the watch's kprobe and fentry texts.
 */

/* An entry: in_task for the writer's functions, not for the socket's events;
 * remember: its return is reported too. */
static __always_inline int hc_watch_entry(u32 kind, const void *sk, s64 value, int in_task, int remember)
{
	if (!hc_watch_sk(sk, in_task))
		return 0;
	if (remember)
		hc_stash(kind, sk);
	return hc_emit(kind, sk, value);
}

/* tcp_sendmsg_locked on a watched socket: the call in progress, if one of the
 * traced ones, gets its socket; its entry event carries the size the kernel
 * counted (for sendmsg and writev the sum of the iovecs). */
static __always_inline int hc_watch_sendmsg(const void *sk, s64 size)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct hc_watch_call *c;

	if (!hc_watch_sk(sk, 1))
		return 0;
	c = watch_call.lookup(&tid);
	if (c && !c->sk) {
		c->sk = (u64)sk;
		hc_watch_call_event(HC_WATCH_CALL_ENTER, c, size);
	}
	return hc_watch_entry(HC_SENDMSG_ENTER, sk, size, 1, 1);
}

static __always_inline int hc_watch_call_start(u32 call, s32 fd)
{
	struct hc_watch_call c = {};

	if (hc_watch_task())
		hc_watch_call_begin(&c, call, fd, 0);
	return 0;
}
