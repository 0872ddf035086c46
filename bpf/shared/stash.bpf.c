/* shared/stash.bpf.c: the socket an entry saw, kept for its return.
 *
 * A kretprobe sees only the return value, so the entry stores its socket in
 * `entered`, keyed by task and function, and the return reports on it. The
 * watch's fentry programs use it too: there a return is reported exactly when
 * its entry passed the watch's filter. A socket that failed the filter is
 * never stored, so its return costs one failed lookup.
 *
 * Joined into the kprobe texts of both modes and the watch's fentry text.
 */
struct entered_key {
	u64 id;    /* pid_tgid; for the idle task (0) the CPU, as every CPU's idle task is pid 0 */
	u32 kind;  /* the entry's enum hc_kind */
	u32 pad;
};
BPF_HASH(entered, struct entered_key, u64, 4096);

static __always_inline struct entered_key hc_key(u32 kind)
{
	struct entered_key k = {};

	k.id = bpf_get_current_pid_tgid();
	if (!k.id)
		k.id = 0xffffffff00000000ULL | bpf_get_smp_processor_id();
	k.kind = kind;
	return k;
}

/* The entry of kind `kind` ran on sk: its return will report on sk. */
static __always_inline void hc_stash(u32 kind, const void *sk)
{
	struct entered_key k = hc_key(kind);
	u64 v = (u64)sk;

	entered.update(&k, &v);
}

static __always_inline int hc_return(u32 entry_kind, u32 kind, s64 ret)
{
	struct entered_key k = hc_key(entry_kind);
	u64 *skp = entered.lookup(&k);
	const void *sk;

	if (!skp)
		return 0;
	sk = (const void *)*skp;
	entered.delete(&k);
	return hc_emit(kind, sk, ret);
}
