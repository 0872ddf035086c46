/* watch/fentry.bpf.c: the watch's fentry/fexit programs: the write path, and
 * the write-like calls where each gets its fd.
 *
 * bcc attaches them at load, so each optional one is compiled only when its
 * function exists (HAVE_<function>: in /proc/kallsyms and in BTF). A return
 * is reported when its entry passed the filter (shared/stash.bpf.c). Each
 * program is declared without arguments and reads only the slots it needs,
 * at the positions the running kernel's BTF gives (HC_FARG, HC_FRET: args.h).
 *
 * Kernel: BTF and BPF trampolines (5.5+); refused on some kernels (EPERM).
 */
#include "args.h"

KFUNC_PROBE(tcp_sendmsg_locked)
{
	return hc_watch_sendmsg((void *)HC_FARG(tcp_sendmsg_locked, sk), (s64)HC_FARG(tcp_sendmsg_locked, size));
}

KRETFUNC_PROBE(tcp_sendmsg_locked)
{
	return hc_return(HC_SENDMSG_ENTER, HC_SENDMSG_RETURN, (s64)(int)HC_FRET(tcp_sendmsg_locked));
}

#ifdef HAVE_sk_stream_wait_connect
KFUNC_PROBE(sk_stream_wait_connect)
{
	return hc_watch_entry(HC_WAIT_CONNECT_ENTER, (void *)HC_FARG(sk_stream_wait_connect, sk), 0, 1, 1);
}

KRETFUNC_PROBE(sk_stream_wait_connect)
{
	return hc_return(HC_WAIT_CONNECT_ENTER, HC_WAIT_CONNECT_RETURN, (s64)(int)HC_FRET(sk_stream_wait_connect));
}
#endif

#ifdef HAVE_sk_stream_error
KFUNC_PROBE(sk_stream_error)
{
	return hc_watch_entry(HC_STREAM_ERROR_ENTER, (void *)HC_FARG(sk_stream_error, sk),
			      (s64)(int)HC_FARG(sk_stream_error, err), 1, 1);
}

KRETFUNC_PROBE(sk_stream_error)
{
	return hc_return(HC_STREAM_ERROR_ENTER, HC_STREAM_ERROR_RETURN, (s64)(int)HC_FRET(sk_stream_error));
}
#endif

KFUNC_PROBE(tcp_reset)
{
	return hc_watch_entry(HC_TCP_RESET, (void *)HC_FARG(tcp_reset, sk), 0, 0, 0);
}

#ifdef HAVE_tcp_done_with_error
KFUNC_PROBE(tcp_done_with_error)
{
	return hc_watch_entry(HC_DONE_WITH_ERROR, (void *)HC_FARG(tcp_done_with_error, sk),
			      (s64)(int)HC_FARG(tcp_done_with_error, err), 0, 0);
}
#endif

KFUNC_PROBE(tcp_done)
{
	return hc_watch_entry(HC_TCP_DONE, (void *)HC_FARG(tcp_done, sk), 0, 0, 1);
}

KRETFUNC_PROBE(tcp_done)
{
	return hc_return(HC_TCP_DONE, HC_TCP_DONE_RETURN, 0);
}

#ifdef HAVE_tcp_fin
KFUNC_PROBE(tcp_fin)
{
	return hc_watch_entry(HC_TCP_FIN, (void *)HC_FARG(tcp_fin, sk), 0, 0, 1);
}

KRETFUNC_PROBE(tcp_fin)
{
	return hc_return(HC_TCP_FIN, HC_TCP_FIN_RETURN, 0);
}
#endif

/* The write-like calls (signatures as in watch/kprobe.bpf.c): the fd is the
 * first argument; the return value's slot follows every argument (RET_). */
#ifdef HAVE_ksys_write
KFUNC_PROBE(ksys_write)
{
	return hc_watch_call_start(HC_CALL_WRITE, (s32)HC_FARG(ksys_write, fd));
}

KRETFUNC_PROBE(ksys_write)
{
	return hc_watch_call_end((s64)HC_FRET(ksys_write));
}
#endif

#ifdef HAVE___sys_sendto
KFUNC_PROBE(__sys_sendto)
{
	return hc_watch_call_start(HC_CALL_SENDTO, (s32)HC_FARG(__sys_sendto, fd));
}

KRETFUNC_PROBE(__sys_sendto)
{
	return hc_watch_call_end((s64)(int)HC_FRET(__sys_sendto));
}
#endif

#ifdef HAVE___sys_sendmsg
KFUNC_PROBE(__sys_sendmsg)
{
	return hc_watch_call_start(HC_CALL_SENDMSG, (s32)HC_FARG(__sys_sendmsg, fd));
}

KRETFUNC_PROBE(__sys_sendmsg)
{
	return hc_watch_call_end((s64)HC_FRET(__sys_sendmsg));
}
#endif

#ifdef HAVE_do_writev
KFUNC_PROBE(do_writev)
{
	return hc_watch_call_start(HC_CALL_WRITEV, (s32)HC_FARG(do_writev, fd));
}

KRETFUNC_PROBE(do_writev)
{
	return hc_watch_call_end((s64)HC_FRET(do_writev));
}
#endif
