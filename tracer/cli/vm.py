"""`trace-halfclose vm`: Boot another kernel with virtme-ng and run the tool there."""
from __future__ import annotations

import sys

import click

from tracer.errors import UserError
from tracer.cli.common import fail, interrupted


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--kernel", metavar="PATH",
              help="A vmlinuz to boot, or a kernel build tree. Default: the newest kernel under /boot "
                   "that is not the running one.")
@click.option("--kvm/--no-kvm", default=None,
              help="Force KVM on or off. Default: KVM, except on a machine that is itself a VM "
                   "(nested guests hang there), which uses software emulation.")
@click.option("--cpus", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--memory", default="2G", show_default=True)
@click.option("--kconfig", is_flag=True,
              help="Print the kernel config fragment a kernel tree needs (every backend, BTF, virtme-ng) "
                   "and exit: `vng --kconfig --config FILE` in the tree, then make.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def vm(kernel, kvm, cpus, memory, kconfig, args) -> None:
    """Boot another kernel with virtme-ng and run `trace-halfclose ARGS` in it.

    The guest shares this machine's files, so it runs this install against a
    distro kernel with kprobes, or a kernel you built. Output and exit status
    are the inner tool's.

    \b
      sudo trace-halfclose vm                      the reproduction on the newest /boot kernel
      sudo trace-halfclose vm -- --writes 3 --json
      sudo trace-halfclose vm --kernel /boot/vmlinuz-6.12.57+deb12-amd64
      trace-halfclose vm --kconfig > ../th.config  in a kernel tree: vng --kconfig --config ../th.config,
      sudo trace-halfclose vm --kernel .           make -j2, then boot it
    """
    from tracer.display import console
    from tracer.collect import vm as vmmod

    if kconfig:
        click.echo(vmmod.kconfig_fragment(), nl=False)
        return

    try:
        chosen = vmmod.pick_kernel(kernel)
        use, why = vmmod.use_kvm(kvm)
        vmmod.find_vng()
    except UserError as exc:
        fail(exc)
    inner, shared = vmmod.absolute_records(list(args))
    spec = vmmod.VmSpec(chosen, use, cpus, memory, shared)
    console.note(f"trace-halfclose vm: booting {chosen} ({why}); inside: trace-halfclose {' '.join(inner)}")
    spinner = console.Spinner(f"booting {chosen.name}, then bcc compiles inside the guest")
    try:
        code = vmmod.stream(spec, vmmod.inner_command(inner, vmmod.host_terminal()), started=spinner.stop)
    except KeyboardInterrupt as exc:
        spinner.stop()
        interrupted(exc, "the VM was stopped")
    spinner.stop()
    if code == vmmod.VNG_NO_STATUS:
        console.note(f"the VM ended without the guest command's exit status (vng's {code}): the guest "
                     f"kernel did not boot or panicked; `vng --verbose --run {chosen} --disable-kvm` "
                     "shows its console")
    sys.exit(code)
