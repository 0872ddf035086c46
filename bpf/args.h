/* args.h: a probed kernel function's argument by name, at the position the
 * running kernel's BTF gives it.
 *
 * Prototypes change between kernels: tcp_recvmsg has (sk, msg, len, nonblock,
 * flags, addr_len) until 5.18, (sk, msg, len, flags, addr_len) from 5.19,
 * (sk, msg, len, flags) on 6.18. So no program assumes a slot: the plan
 * (tracer/collect/plan.py, Plan.argument_defines) reads each function's
 * FUNC_PROTO from /sys/kernel/btf/vmlinux and passes
 *   ARG_<function>_<parameter>  the parameter's slot (0 = first), for each one a program reads
 *   RET_<function>              the fexit return value's slot: after every parameter
 * and leaves out, with the reason, any probe whose function lacks a parameter
 * it reads. A program is compiled only when its function is planned, so an
 * ARG_ it uses is always defined.
 *
 * No maps here (bcc rewrites map calls only in the main text): #included by
 * the kprobe and fentry parts.
 */
#ifndef HC_ARGS_H
#define HC_ARGS_H

/* kprobe: the n-th argument register (PT_REGS_PARM1..6: x86-64 and arm64 pass
 * six in registers; the plan never places a kprobe's argument past the sixth).
 * n is a constant: the compiler keeps one branch. */
#define HC_KPROBE_ARG(ctx, n)                                                  \
	((n) == 0 ? PT_REGS_PARM1(ctx) : (n) == 1 ? PT_REGS_PARM2(ctx) :       \
	 (n) == 2 ? PT_REGS_PARM3(ctx) : (n) == 3 ? PT_REGS_PARM4(ctx) :       \
	 (n) == 4 ? PT_REGS_PARM5(ctx) : PT_REGS_PARM6(ctx))

/* In a kprobe program: the argument `param` of `func`, e.g. HC_KARG(tcp_recvmsg, len). */
#define HC_KARG(func, param) HC_KPROBE_ARG(ctx, ARG_##func##_##param)

/* In a KFUNC_PROBE/KRETFUNC_PROBE declared without arguments: bcc's BPF_PROG
 * gives the program `unsigned long long *ctx`, one slot per argument, and for
 * fexit the return value after the last (btf_ctx_access, kernel/bpf/btf.c).
 * Only the slots named are read: reading another argument could be refused by
 * the verifier (5.15 accepts pointer arguments only to structs, void or char). */
#define HC_FARG(func, param) (ctx[ARG_##func##_##param])
#define HC_FRET(func) (ctx[RET_##func])

#endif
