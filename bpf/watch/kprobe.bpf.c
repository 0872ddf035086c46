/* watch/kprobe.bpf.c: the watch's kprobes: the write path's entries (their
 * returns are in shared/kretprobes.bpf.c) and the write-like calls, where
 * each gets its fd.
 *
 * User space attaches each program (tracer/collect/bpf.py, from the rows of
 * tracer/collect/plan.py). Arguments are read at the positions the running
 * kernel's BTF gives (HC_KARG: args.h); a program of an optional function is
 * compiled only when the plan has it (HAVE_<function>). Kernel: CONFIG_KPROBES.
 */
#include "args.h"

int sendmsg_enter(struct pt_regs *ctx)
{
	return hc_watch_sendmsg((void *)HC_KARG(tcp_sendmsg_locked, sk), (s64)HC_KARG(tcp_sendmsg_locked, size));
}

#ifdef HAVE_sk_stream_wait_connect
int wait_connect_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_WAIT_CONNECT_ENTER, (void *)HC_KARG(sk_stream_wait_connect, sk), 0, 1, 1);
}
#endif

#ifdef HAVE_sk_stream_error
int stream_error_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_STREAM_ERROR_ENTER, (void *)HC_KARG(sk_stream_error, sk),
			      (s64)(int)HC_KARG(sk_stream_error, err), 1, 1);
}
#endif

int reset_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_TCP_RESET, (void *)HC_KARG(tcp_reset, sk), 0, 0, 0);
}

#ifdef HAVE_tcp_done_with_error
int done_with_error_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_DONE_WITH_ERROR, (void *)HC_KARG(tcp_done_with_error, sk),
			      (s64)(int)HC_KARG(tcp_done_with_error, err), 0, 0);
}
#endif

int done_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_TCP_DONE, (void *)HC_KARG(tcp_done, sk), 0, 0, 1);
}

#ifdef HAVE_tcp_fin
int fin_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_TCP_FIN, (void *)HC_KARG(tcp_fin, sk), 0, 0, 1);
}
#endif

/* The write-like calls, where they get their fd (signatures read from the BTF of
 * Debian's 6.1.0-56 and 6.12.117 and of 6.18.44, and in the trees 5.4.59 to 6.12.117):
 * ssize_t ksys_write(unsigned int fd, ...) (fs/read_write.c),
 * int __sys_sendto(int fd, ...) and long __sys_sendmsg(int fd, ...)
 * (net/socket.c), ssize_t do_writev(unsigned long fd, ...) (fs/read_write.c). */
#ifdef HAVE_ksys_write
int ksys_write_enter(struct pt_regs *ctx)
{
	return hc_watch_call_start(HC_CALL_WRITE, (s32)HC_KARG(ksys_write, fd));
}
#endif

#ifdef HAVE___sys_sendto
int sys_sendto_enter(struct pt_regs *ctx)
{
	return hc_watch_call_start(HC_CALL_SENDTO, (s32)HC_KARG(__sys_sendto, fd));
}
#endif

#ifdef HAVE___sys_sendmsg
int sys_sendmsg_enter(struct pt_regs *ctx)
{
	return hc_watch_call_start(HC_CALL_SENDMSG, (s32)HC_KARG(__sys_sendmsg, fd));
}
#endif

#ifdef HAVE_do_writev
int do_writev_enter(struct pt_regs *ctx)
{
	return hc_watch_call_start(HC_CALL_WRITEV, (s32)HC_KARG(do_writev, fd));
}
#endif

/* The return type decides the cast: long for ksys_write, __sys_sendmsg and do_writev, int for __sys_sendto. */
int call_return_long(struct pt_regs *ctx)
{
	return hc_watch_call_end((s64)PT_REGS_RC(ctx));
}

int call_return_int(struct pt_regs *ctx)
{
	return hc_watch_call_end((s64)(int)PT_REGS_RC(ctx));
}
