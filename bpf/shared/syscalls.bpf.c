/* shared/syscalls.bpf.c: a syscall's number and arguments in the raw_syscalls
 * tracepoints, for the tracepoint texts of both modes.
 *
 * The per-syscall events (syscalls:sys_enter_write, ...) are not tracepoints of
 * their own: the kernel builds them from raw_syscalls:sys_enter and sys_exit
 * (kernel/trace/trace_syscalls.c), so a raw tracepoint program attaches to
 * those two, whose arguments are (struct pt_regs *regs, long id) and
 * (struct pt_regs *regs, long ret) (include/trace/events/syscalls.h, 6.1 and
 * 6.12). The arguments are read from regs at the x86-64 registers' offsets in
 * BTF (OFF_REGS_*: SYSCALL_FIELDS in tracer/kernel/offsets.py); the number at
 * exit from orig_ax. The numbers are x86-64's (__NR_*: the kernel headers'
 * uapi table, which is the ABI and never changes).
 *
 * Every program runs for every syscall of the machine: each checks the task
 * first, the syscall number next, and only then reads anything.
 */
#include <asm/unistd_64.h>

/* A register of the syscall's task, at its offset in struct pt_regs. */
static __always_inline u64 hc_sys_reg(struct bpf_raw_tracepoint_args *ctx, u32 off)
{
	u64 v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), (const char *)ctx->args[0] + off);
	return v;
}

/* sys_enter: the syscall's number is the tracepoint's second argument. */
static __always_inline long hc_sys_enter_nr(struct bpf_raw_tracepoint_args *ctx)
{
	return (long)ctx->args[1];
}

/* sys_exit: its return value is the second argument; the number is orig_ax. */
static __always_inline long hc_sys_exit_nr(struct bpf_raw_tracepoint_args *ctx)
{
	return (long)hc_sys_reg(ctx, OFF_REGS_NR);
}

static __always_inline s64 hc_sys_ret(struct bpf_raw_tracepoint_args *ctx)
{
	return (s64)ctx->args[1];
}

#define HC_SYS_ARG0(ctx) hc_sys_reg(ctx, OFF_REGS_ARG0)
#define HC_SYS_ARG1(ctx) hc_sys_reg(ctx, OFF_REGS_ARG1)
#define HC_SYS_ARG2(ctx) hc_sys_reg(ctx, OFF_REGS_ARG2)
