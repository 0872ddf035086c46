"""What the running kernel offers, read from files given as parameters: kallsyms,
tracefs, kernel headers. Every tree here is built in tmp_path."""
import os

import pytest

from tracer.kernel import support as ks
from tracer.errors import UserError

# Lines as /proc/kallsyms prints them ("address type name [module]"). The T/t lines for
# the probed functions and tcp_fin.cold are from this 6.18.44 host's /proc/kallsyms;
# the clone, data and module lines are in the forms kallsyms uses for those symbols.
KALLSYMS = """\
ffffffff8124458a t tcp_fin.cold
ffffffff81e9d040 T sk_stream_error
ffffffff81e9d1d0 T sk_stream_wait_connect
ffffffff8206b370 T __pfx_tcp_done
ffffffff8206b380 T tcp_done
ffffffff8206c910 T tcp_sendmsg_locked
ffffffff8207cf10 T tcp_done_with_error
ffffffff8207cf60 T tcp_reset
ffffffff8207d8d0 T tcp_fin
ffffffff8207fd90 T tcp_finish_connect
ffffffff82080000 t tcp_data_queue
ffffffff82081000 t tcp_ack.constprop.0
ffffffff82082000 t tcp_rcv_state_process.part.0
ffffffff82083000 t tcp_v4_send_reset.llvm.123456789
ffffffff83000000 D sysctl_tcp_mem
ffffffff83000100 d tcp_sock_type
ffffffff83000200 B tcp_memory_allocated
ffffffff83000300 b tcp_orphan_timer
ffffffff83000400 R __ksymtab_tcp_done
ffffffff83000500 r __kstrtab_tcp_reset
ffffffffc0a00000 t nf_conntrack_tcp_packet\t[nf_conntrack]
ffffffffc0a00100 T tcp_vegas_init\t[tcp_vegas]
ffffffff
"""

PROBED = {"tcp_sendmsg_locked", "sk_stream_wait_connect", "sk_stream_error", "tcp_reset",
          "tcp_done_with_error", "tcp_done", "tcp_fin"}


@pytest.fixture
def kallsyms(tmp_path):
    p = tmp_path / "kallsyms"
    p.write_text(KALLSYMS)
    return p


def test_kernel_functions_keeps_exact_text_symbols(kallsyms):
    found = ks.kernel_functions(kallsyms)
    assert PROBED <= found
    assert {"tcp_data_queue", "tcp_finish_connect", "nf_conntrack_tcp_packet", "tcp_vegas_init"} <= found


def test_kernel_functions_drops_data_symbols(kallsyms):
    found = ks.kernel_functions(kallsyms)
    for data in ("sysctl_tcp_mem", "tcp_sock_type", "tcp_memory_allocated", "tcp_orphan_timer",
                 "__ksymtab_tcp_done", "__kstrtab_tcp_reset"):
        assert data not in found


def test_kernel_functions_drops_compiler_clones(kallsyms):
    # A .isra/.constprop/.part/.llvm clone may take other arguments than the source
    # (GCC IPA-SRA drops or splits parameters), so PT_REGS_PARM* would be wrong there.
    found = ks.kernel_functions(kallsyms)
    assert not [n for n in found if any(s in n for s in (".constprop.", ".part.", ".llvm.", ".isra."))]


def test_only_a_clone_means_the_function_is_missing(tmp_path):
    # A kernel where GCC left only tcp_fin.isra.0: tcp_fin must count as missing.
    p = tmp_path / "kallsyms"
    p.write_text("ffffffff8207d8d0 t tcp_fin.isra.0\nffffffff8207cf60 T tcp_reset\n")
    assert ks.kernel_functions(p, wanted={"tcp_fin", "tcp_reset"}) == {"tcp_reset"}


def test_wanted_filters_to_the_asked_names(kallsyms):
    assert ks.kernel_functions(kallsyms, wanted=PROBED | {"no_such_fn"}) == PROBED
    assert ks.kernel_functions(kallsyms, wanted={"tcp_fin"}) == {"tcp_fin"}


def test_kernel_functions_drops_cold_splits(kallsyms):
    assert "tcp_fin.cold" not in ks.kernel_functions(kallsyms)


# --- tracefs ---------------------------------------------------------------------


def _tracefs(d):
    d.mkdir(parents=True)
    (d / "available_events").write_text("")
    return d


def test_find_tracefs_takes_the_first_mounted_candidate(tmp_path):
    a, b = tmp_path / "sys/kernel/tracing", tmp_path / "sys/kernel/debug/tracing"
    b = _tracefs(b)
    a.mkdir(parents=True)  # the mount point exists but nothing is mounted on it
    assert ks.find_tracefs((a, b)) == b
    (a / "available_events").write_text("")  # now tracefs is mounted there too
    assert ks.find_tracefs((a, b)) == a


def test_find_tracefs_none_when_not_mounted(tmp_path):
    assert ks.find_tracefs((tmp_path / "x", tmp_path / "y")) is None


def test_ensure_tracefs_uses_a_mounted_one_without_mounting(tmp_path, monkeypatch):
    d = _tracefs(tmp_path / "tracing")
    monkeypatch.setattr(ks.subprocess, "run", lambda *a, **k: pytest.fail("must not mount"))
    assert ks.ensure_tracefs((d,)) == d


def test_ensure_tracefs_reports_a_failed_mount_with_the_command(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ks.subprocess, "run", lambda cmd, **k: calls.append(cmd))
    target = tmp_path / "tracing"
    with pytest.raises(UserError) as ei:
        ks.ensure_tracefs((target,))
    assert calls and calls[0][:3] == ["mount", "-t", "tracefs"] and calls[0][-1] == str(target)
    assert f"mount -t tracefs nodev {target}" in ei.value.remedy


def test_tracepoint_exists(tmp_path):
    assert not ks.tracepoint_exists(tmp_path, "sock", "inet_sock_set_state")
    fmt = tmp_path / "events/sock/inet_sock_set_state/format"
    fmt.parent.mkdir(parents=True)
    fmt.write_text("name: inet_sock_set_state\n")
    assert ks.tracepoint_exists(tmp_path, "sock", "inet_sock_set_state")


# --- kernel headers -----------------------------------------------------------------


REL = "6.1.0-56-amd64"


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)


def test_headers_dir_with_include(tmp_path, no_env):
    build = tmp_path / REL / "build"
    (build / "include").mkdir(parents=True)
    assert ks.headers_dir(REL, modules=tmp_path) == build


def test_headers_dir_with_makefile_only(tmp_path, no_env):
    build = tmp_path / REL / "build"
    build.mkdir(parents=True)
    (build / "Makefile").write_text("")
    assert ks.headers_dir(REL, modules=tmp_path) == build


def test_headers_dir_missing_or_empty(tmp_path, no_env):
    assert ks.headers_dir(REL, modules=tmp_path) is None
    (tmp_path / REL / "build").mkdir(parents=True)  # empty build dir: no headers
    assert ks.headers_dir(REL, modules=tmp_path) is None


def test_headers_dir_dangling_build_symlink(tmp_path, no_env):
    # Debian: /lib/modules/R/build -> /usr/src/linux-headers-R, dangling once headers are removed.
    (tmp_path / REL).mkdir()
    os.symlink(tmp_path / "usr/src/linux-headers-gone", tmp_path / REL / "build")
    assert ks.headers_dir(REL, modules=tmp_path) is None


def test_headers_dir_follows_build_symlink(tmp_path, no_env):
    src = tmp_path / "usr/src/linux-headers-6.1.0-56-amd64"
    (src / "include").mkdir(parents=True)
    (tmp_path / REL).mkdir()
    os.symlink(src, tmp_path / REL / "build")
    assert ks.headers_dir(REL, modules=tmp_path) == tmp_path / REL / "build"


def test_bcc_kernel_source_wins(tmp_path, monkeypatch):
    # bcc honours BCC_KERNEL_SOURCE before /lib/modules/$(uname -r)/build.
    src = tmp_path / "linux"
    src.mkdir()
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(src))
    assert ks.headers_dir(REL, modules=tmp_path / "nothing") == src


def test_bcc_kernel_source_not_a_dir_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("BCC_KERNEL_SOURCE", str(tmp_path / "missing"))
    build = tmp_path / REL / "build"
    (build / "include").mkdir(parents=True)
    assert ks.headers_dir(REL, modules=tmp_path) == build


def test_headers_dir_defaults_to_the_running_release(tmp_path, no_env):
    build = tmp_path / os.uname().release / "build"
    (build / "include").mkdir(parents=True)
    assert ks.headers_dir(modules=tmp_path) == build


# --- root ---------------------------------------------------------------------------


def test_require_root_refuses_non_root_with_sudo_remedy(monkeypatch):
    monkeypatch.setattr(ks.os, "geteuid", lambda: 1000)
    with pytest.raises(UserError) as ei:
        ks.require_root()
    assert "root" in ei.value.message
    assert "sudo" in ei.value.remedy


def test_require_root_accepts_root(monkeypatch):
    monkeypatch.setattr(ks.os, "geteuid", lambda: 0)
    ks.require_root()
