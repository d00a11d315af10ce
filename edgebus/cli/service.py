"""`edgebus install-service`: install the systemd units, the service user and a default config.

What it does, in order (each step is printed):
1. the units systemd/edgebus.service and systemd/edgebus-bridge@.service into
   /etc/systemd/system/, with ExecStart= pointing at this edgebus;
2. /etc/edgebus/edgebus.yaml from systemd/edgebus.yaml, only when the file does not exist yet;
3. /etc/sysusers.d/edgebus.conf, then systemd-sysusers to create the `edgebus` user and group;
4. `systemctl daemon-reload` and `systemctl enable edgebus.service` (with --start, `--now`), when
   systemd is running; otherwise the commands are printed.

`--root DIR` installs into another root directory (an image being built, or a test) and runs no
systemctl. The unit files ship inside the package (edgebus/systemd -> systemd/ of the source tree).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edgebus.errors import ServiceInstallError as InstallError

# The ExecStart path written in the shipped units, replaced by the real one at install.
UNIT_EXEC_PLACEHOLDER = "/opt/edgebus/bin/edgebus"
UNITS = ("edgebus.service", "edgebus-bridge@.service")
CONFIG_TEMPLATE = "edgebus.yaml"
SYSUSERS_TEMPLATE = "edgebus.sysusers.conf"
UNIT_DIR = Path("etc/systemd/system")
CONFIG_PATH = Path("etc/edgebus/edgebus.yaml")
SYSUSERS_PATH = Path("etc/sysusers.d/edgebus.conf")
# ProtectHome=yes in the unit makes these invisible to the service.
HIDDEN_PREFIXES = ("/home/", "/root/", "/run/user/")
# PrivateTmp=yes gives the service its own empty /tmp and /var/tmp: an edgebus there is not found.
PRIVATE_TMP_PREFIXES = ("/tmp/", "/var/tmp/")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "install-service", help="install the systemd units, the edgebus user and a default config",
        description="Install systemd/edgebus.service and edgebus-bridge@.service into "
                    "/etc/systemd/system, a default /etc/edgebus/edgebus.yaml (never overwritten), "
                    "and the `edgebus` user and group (systemd-sysusers); then enable the service. "
                    "Run as root. Add client users to the `edgebus` group.",
    )
    p.add_argument("--root", metavar="DIR", default="/",
                   help="install below DIR instead of / (no systemctl is run)")
    p.add_argument("--exec", dest="executable", metavar="PATH",
                   help="the edgebus executable for ExecStart= (default: this one)")
    p.add_argument("--start", action="store_true", help="also start the service now")
    p.add_argument("--no-enable", action="store_true", help="do not enable the service")
    p.add_argument("--dry-run", action="store_true", help="print what would be done, do nothing")
    p.set_defaults(func=run)


def template(name: str) -> str:
    from importlib import resources  # here: `edgebus serve` loads this module, not this function

    return resources.files("edgebus").joinpath("systemd", name).read_text(encoding="utf-8")


def find_executable(given: str | None) -> Path:
    """The edgebus command the service will run, checked to be usable under the unit's
    ProtectHome=yes and ExecStart= quoting rules."""
    if given:
        exe = Path(given).absolute()
    else:
        beside = Path(sys.executable).parent / "edgebus"
        import shutil

        found = shutil.which("edgebus")
        if beside.is_file() and os.access(beside, os.X_OK):
            exe = beside.absolute()
        elif found:
            exe = Path(found).absolute()
        else:
            raise InstallError("cannot find the `edgebus` command; pass --exec PATH")
    text = str(exe)
    if text.startswith(HIDDEN_PREFIXES):
        raise InstallError(
            f"{text} is under a home directory, which the service cannot see (ProtectHome=yes); "
            "install edgebus in a virtualenv such as /opt/edgebus: python3 -m venv /opt/edgebus "
            "&& /opt/edgebus/bin/pip install edgebus && /opt/edgebus/bin/edgebus install-service")
    if any(c.isspace() for c in text) or "%" in text:
        raise InstallError(f"{text!r}: ExecStart= needs a path without spaces or '%'")
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        raise InstallError(f"{exe} is not an executable file")
    return exe


def check_visible_on_this_host(exe: Path, root: Path, dry: bool) -> None:
    """Installing on this host (not into an image): the unit's private /tmp would hide an
    edgebus below /tmp (a checkout cloned there), and the unit would fail with status 203/EXEC."""
    if root == Path("/") and not dry and str(exe).startswith(PRIVATE_TMP_PREFIXES):
        raise InstallError(
            f"{exe} is below /tmp or /var/tmp, which the service cannot see (PrivateTmp=yes); "
            "install edgebus in a virtualenv such as /opt/edgebus: python3 -m venv /opt/edgebus "
            "&& /opt/edgebus/bin/pip install /path/to/edgebus && /opt/edgebus/bin/edgebus "
            "install-service")


def render_unit(name: str, executable: Path) -> str:
    text = template(name)
    if UNIT_EXEC_PLACEHOLDER not in text:
        raise InstallError(f"{name}: no ExecStart placeholder {UNIT_EXEC_PLACEHOLDER}")
    return text.replace(UNIT_EXEC_PLACEHOLDER, str(executable))


def _write(path: Path, data: str, mode: int, dry: bool, say: list[str]) -> None:
    say.append(f"write {path} (mode {mode:04o})")
    if dry:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(data, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _systemd_running(root: Path) -> bool:
    return root == Path("/") and Path("/run/systemd/system").is_dir()


def _run(cmd: list[str], dry: bool, say: list[str], stdin: str | None = None) -> None:
    say.append("run " + " ".join(cmd))
    if dry:
        return
    import subprocess

    r = subprocess.run(cmd, input=stdin, text=True, capture_output=True, check=False)
    if r.returncode != 0:
        raise InstallError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")


def install(root: Path, executable: Path, *, enable: bool = True, start: bool = False,
            dry: bool = False) -> list[str]:
    """Do the installation; returns the steps taken (or, with dry, to be taken)."""
    say: list[str] = []
    for name in UNITS:
        _write(root / UNIT_DIR / name, render_unit(name, executable), 0o644, dry, say)
    config = root / CONFIG_PATH
    if config.exists():
        say.append(f"keep {config} (it exists; compare with `edgebus install-service --dry-run`)")
    else:
        # Readable by the service user; it holds no secret (root:root 0644, like most of /etc).
        _write(config, template(CONFIG_TEMPLATE), 0o644, dry, say)
    sysusers = template(SYSUSERS_TEMPLATE)
    _write(root / SYSUSERS_PATH, sysusers, 0o644, dry, say)
    import shutil

    if shutil.which("systemd-sysusers"):
        if root != Path("/") and not dry:
            (root / "etc").mkdir(parents=True, exist_ok=True)
        _run(["systemd-sysusers", f"--root={root}", "-"], dry, say, stdin=sysusers)
    else:
        _run(["useradd", "--system", "--user-group", "--home-dir", "/var/lib/edgebus",
              "--no-create-home", "--shell", "/usr/sbin/nologin", "--root", str(root),
              "edgebus"], dry, say)
    commands = [["systemctl", "daemon-reload"]]
    if enable:
        commands.append(["systemctl", "enable", *(["--now"] if start else []), "edgebus.service"])
    if _systemd_running(root):
        for cmd in commands:
            _run(cmd, dry, say)
    else:
        say.append("systemd is not running here" if root == Path("/") else f"installed below {root}")
        say.extend("then run: " + " ".join(cmd) for cmd in commands)
    say.append("add client users to the edgebus group: usermod -aG edgebus USER "
               "(they connect to /run/edgebus/edgebus.sock)")
    return say


def run(args: argparse.Namespace) -> int:
    root = Path(args.root).absolute()
    if root == Path("/") and os.geteuid() != 0 and not args.dry_run:
        raise InstallError("installing the service needs root: sudo edgebus install-service")
    exe = find_executable(args.executable)
    check_visible_on_this_host(exe, root, args.dry_run)
    for line in install(root, exe, enable=not args.no_enable, start=args.start, dry=args.dry_run):
        print(("would " if args.dry_run else "") + line)
    return 0
