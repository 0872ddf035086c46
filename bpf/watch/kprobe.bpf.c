/* watch/kprobe.bpf.c: the watch's kprobes: the write path's entries (their
 * returns are in shared/kretprobes.bpf.c) and the write-like calls, where
 * each gets its fd.
 *
 * User space attaches each program (tracer/collect/bpf.py, from the rows of
 * tracer/collect/plan.py). Kernel: CONFIG_KPROBES.
 */

int sendmsg_enter(struct pt_regs *ctx)
{
	return hc_watch_sendmsg((void *)PT_REGS_PARM1(ctx), (s64)PT_REGS_PARM3(ctx));
}

int wait_connect_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_WAIT_CONNECT_ENTER, (void *)PT_REGS_PARM1(ctx), 0, 1, 1);
}

int stream_error_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_STREAM_ERROR_ENTER, (void *)PT_REGS_PARM1(ctx), (s64)(int)PT_REGS_PARM3(ctx), 1, 1);
}

int reset_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_TCP_RESET, (void *)PT_REGS_PARM1(ctx), 0, 0, 0);
}

int done_with_error_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_DONE_WITH_ERROR, (void *)PT_REGS_PARM1(ctx), (s64)(int)PT_REGS_PARM2(ctx), 0, 0);
}

int done_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_TCP_DONE, (void *)PT_REGS_PARM1(ctx), 0, 0, 1);
}

int fin_enter(struct pt_regs *ctx)
{
	return hc_watch_entry(HC_TCP_FIN, (void *)PT_REGS_PARM1(ctx), 0, 0, 1);
}

/* The write-like calls, where they get their fd (signatures read from the BTF of
 * Debian's 6.1.0-56 and 6.12.117 and of 6.18.44): ssize_t ksys_write(unsigned int fd, ...) (fs/read_write.c),
 * int __sys_sendto(int fd, ...) and long __sys_sendmsg(int fd, ...)
 * (net/socket.c), ssize_t do_writev(unsigned long fd, ...) (fs/read_write.c). */
int ksys_write_enter(struct pt_regs *ctx)
{
	return hc_watch_call_start(HC_CALL_WRITE, (s32)PT_REGS_PARM1(ctx));
}

int sys_sendto_enter(struct pt_regs *ctx)
{
	return hc_watch_call_start(HC_CALL_SENDTO, (s32)PT_REGS_PARM1(ctx));
}

int sys_sendmsg_enter(struct pt_regs *ctx)
{
	return hc_watch_call_start(HC_CALL_SENDMSG, (s32)PT_REGS_PARM1(ctx));
}

int do_writev_enter(struct pt_regs *ctx)
{
	return hc_watch_call_start(HC_CALL_WRITEV, (s32)PT_REGS_PARM1(ctx));
}

/* The return type decides the cast: long for ksys_write, __sys_sendmsg and do_writev, int for __sys_sendto. */
int call_return_long(struct pt_regs *ctx)
{
	return hc_watch_call_end((s64)PT_REGS_RC(ctx));
}

int call_return_int(struct pt_regs *ctx)
{
	return hc_watch_call_end((s64)(int)PT_REGS_RC(ctx));
}
