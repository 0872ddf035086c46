/* shared/fd_sock.bpf.c: the socket behind a file descriptor of the current
 * task, for the syscall tracepoints (their records have the fd, not the socket).
 *
 * task->files->fdt->fd[fd]->private_data->sk, at offsets from BTF
 * (OFF_TASK_FILES, OFF_FILES_FDT, OFF_FDTABLE_FD, OFF_FILE_PRIVATE,
 * OFF_SOCKET_FILE, OFF_SOCKET_SK: FD_FIELDS in tracer/kernel/offsets.py).
 * Joined into the tracepoint texts of both modes.
 */

/* A file is taken for a socket only if socket->file points back at it. */
static __always_inline const void *hc_fd_sock(s32 fd)
{
	const char *task = (const char *)bpf_get_current_task();
	const char *files = 0, *fdt = 0, *fds = 0, *file = 0, *sock = 0, *back = 0;
	const void *sk = 0;

	bpf_probe_read_kernel(&files, sizeof(files), task + OFF_TASK_FILES);
	if (!files)
		return 0;
	bpf_probe_read_kernel(&fdt, sizeof(fdt), files + OFF_FILES_FDT);
	if (!fdt)
		return 0;
	bpf_probe_read_kernel(&fds, sizeof(fds), fdt + OFF_FDTABLE_FD);
	if (!fds)
		return 0;
	bpf_probe_read_kernel(&file, sizeof(file), fds + (u64)fd * sizeof(void *));
	if (!file)
		return 0;
	bpf_probe_read_kernel(&sock, sizeof(sock), file + OFF_FILE_PRIVATE);
	if (!sock)
		return 0;
	bpf_probe_read_kernel(&back, sizeof(back), sock + OFF_SOCKET_FILE);
	if (back != file)
		return 0;
	bpf_probe_read_kernel(&sk, sizeof(sk), sock + OFF_SOCKET_SK);
	return sk;
}
