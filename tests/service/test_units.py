"""The unit files are reviewed code: systemd-analyze verify and security on them, the hardening
choices that the supervisor's IPC depends on, and `edgebus install-service` into a scratch root."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgebus.cli import service
from edgebus.config import load_config
from edgebus.errors import ServiceInstallError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
MAX_EXPOSURE = 2.5


def unit_lines(name: str) -> list[str]:
    return (UNITS / name).read_text().splitlines()


def directives(name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit_lines(name):
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    """The units as install-service writes them, ExecStart= pointing at an executable that
    exists (verify checks it), in a directory of their own."""
    exe = tmp_path / "opt" / "edgebus" / "bin" / "edgebus"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    d = tmp_path / "units"
    d.mkdir()
    for name in service.UNITS:
        (d / name).write_text(service.render_unit(name, exe))
    return d


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=120)


@needs_analyze
@pytest.mark.parametrize("unit", ["edgebus.service", "edgebus-bridge@mqtt.service",
                                  "edgebus-bridge@replicate.service"])
def test_systemd_analyze_verify_is_clean(rendered: Path, unit: str) -> None:
    r = analyze("verify", str(rendered / unit))
    # verify exits 0 on many warnings, so its output must be empty too.
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stderr


@needs_analyze
def test_verify_notices_a_broken_unit(rendered: Path) -> None:
    """The check above can fail: a misspelt directive is reported."""
    unit = rendered / "edgebus.service"
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHomes=yes"))
    r = analyze("verify", str(unit))
    assert "ProtectHomes" in r.stderr


def exposure(path: Path) -> float:
    r = analyze("security", "--offline=yes", "--no-pager", str(path))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    return float(m.group(1))


@needs_analyze
@pytest.mark.parametrize(("unit", "source"), [
    ("edgebus.service", "edgebus.service"),
    ("edgebus-bridge@mqtt.service", "edgebus-bridge@.service"),
    ("edgebus-bridge@replicate.service", "edgebus-bridge@.service"),
])
def test_security_exposure_is_ok_and_written_beside_the_unit(rendered: Path, unit: str,
                                                             source: str) -> None:
    score = exposure(rendered / unit)
    assert score <= MAX_EXPOSURE
    header = "\n".join(unit_lines(source)[:20])
    m = re.search(r"exposure (\d+\.\d+) OK", header)
    assert m, f"{source} should state its systemd-analyze security score"
    assert float(m.group(1)) == score, f"{source} says {m.group(1)}, systemd-analyze says {score}"


# --- the hardening that the IPC depends on (design brief: "systemd hardening vs. IPC") ----------

def test_supervisor_unit_keeps_what_clients_need() -> None:
    d = directives("edgebus.service")
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert "WatchdogSec" in d and "Restart" in d
    assert d["StateDirectory"] == ["edgebus"] and d["RuntimeDirectory"] == ["edgebus"]
    # A stable user and group for clients: no DynamicUser (RemoveIPC, no stable group).
    assert "DynamicUser" not in d and d["User"] == ["edgebus"] and d["Group"] == ["edgebus"]
    # The socket's directory must be reachable by the group, the log must not be.
    assert d["RuntimeDirectoryMode"] == ["0750"] and d["StateDirectoryMode"] == ["0700"]
    # A private /dev (and /dev/shm) only works because the rings are memfds passed over the
    # socket; test_private_shm.py checks exactly that.
    assert d["PrivateDevices"] == ["yes"]
    # SO_PEERCRED must report real uids: no user namespace.
    assert d.get("PrivateUsers", ["no"]) == ["no"]
    # The metrics endpoint must be reachable from the host's loopback.
    assert d.get("PrivateNetwork", ["no"]) == ["no"]
    assert d["IPAddressAllow"] == ["localhost"] and d["IPAddressDeny"] == ["any"]
    assert "AF_UNIX" in d["RestrictAddressFamilies"][0]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "MemoryDenyWriteExecute"):
        assert d[key] == ["yes"], key
    assert d["ProtectSystem"] == ["strict"] and d["CapabilityBoundingSet"] == [""]
    assert any(v.startswith("@system-service") for v in d["SystemCallFilter"])


def test_supervisor_unit_sets_no_scheduling_priority_and_says_why() -> None:
    """Issue 16: a supervisor at nice -5/-10 did not lower a record's latency (its clients waited
    in its place; bench/results/issue16-tail-summary.md); the unit says so where it would be."""
    d = directives("edgebus.service")
    assert not {"Nice", "CPUSchedulingPolicy", "CPUSchedulingPriority"} & d.keys()
    assert "NOT Nice= / CPUSchedulingPolicy=" in (UNITS / "edgebus.service").read_text()
    assert d["RestrictRealtime"] == ["yes"]


def test_bridge_unit_can_reach_other_hosts_and_the_socket() -> None:
    d = directives("edgebus-bridge@.service")
    # MQTT brokers and replication peers are remote: no IP allow list, no private network.
    assert "IPAddressAllow" not in d and "IPAddressDeny" not in d
    assert d.get("PrivateNetwork", ["no"]) == ["no"]
    assert "AF_INET" in d["RestrictAddressFamilies"][0]
    # It is a client: the group that owns the socket.
    assert d["SupplementaryGroups"] == ["edgebus"]
    assert d.get("PrivateUsers", ["no"]) == ["no"]
    assert d["After"] and "edgebus.service" in " ".join(d["After"])


def test_the_replicate_instance_runs_the_replicator(tmp_path: Path) -> None:
    """The replicator's unit is the bridge template's `replicate` instance (docs/REPLICATION.md,
    "Running it under systemd"): its ExecStart with %i = replicate is `edgebus bridge replicate
    --config /etc/edgebus/bridge-replicate.yaml`, which is `edgebus replicate` (the same check,
    the same answer), a wrong config exits 78 (not restarted), and it runs as edgebus-replicate,
    the user the shipped access rules and sysusers file name."""
    import yaml

    d = directives("edgebus-bridge@.service")
    (exec_start,) = d["ExecStart"]
    argv = exec_start.replace("%i", "replicate").split()
    assert argv[1:] == ["bridge", "replicate", "--config", "/etc/edgebus/bridge-replicate.yaml"]
    token = tmp_path / "backup.token"
    token.write_text("t0ken-of-the-source-node-1234")
    token.chmod(0o600)
    cfg = tmp_path / "bridge-replicate.yaml"
    cfg.write_text(yaml.safe_dump({"node": "gw", "links": [
        {"name": "backup", "target": "peer", "address": "127.0.0.1:9", "token_file": str(token),
         "topics": ["teapot"]}]}))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edgebus.cli.main", *args, str(cfg), "--check"],
                              capture_output=True, text=True, timeout=60)

    unit, plain = run(*argv[1:-1]), run("replicate", "--config")
    assert unit.returncode == 0 and "1 link(s): backup -> peer 127.0.0.1:9" in unit.stdout, unit
    assert unit.stdout == plain.stdout
    cfg.write_text("node: gw\nlinks: []\n")
    from edgebus.cli.main import EXIT_CONFIG

    assert run(*argv[1:-1]).returncode == EXIT_CONFIG
    assert d["User"] == ["edgebus-%i"] and d["After"] and "edgebus.service" in " ".join(d["After"])
    sysusers = (UNITS / "edgebus.sysusers.conf").read_text()
    assert "u edgebus-replicate " in sysusers
    assert "user:edgebus-replicate read topic:*" in (UNITS / "edgebus.yaml").read_text()


def test_bridge_unit_has_a_runtime_directory_of_its_own() -> None:
    """Issue 14 item 16: the bridge's user cannot write to the supervisor's /run/edgebus (0750);
    its status file goes to its own RuntimeDirectory (bridges/mqtt/config.default_status_file
    follows $RUNTIME_DIRECTORY)."""
    d = directives("edgebus-bridge@.service")
    assert d["RuntimeDirectory"] == ["edgebus-bridge-%i"]
    assert d["RuntimeDirectoryMode"] == ["0755"]


@pytest.mark.parametrize("name", ["edgebus.service", "edgebus-bridge@.service"])
def test_a_config_error_is_not_restarted(name: str) -> None:
    # Issue 14 item 7: `edgebus serve` and `edgebus bridge` exit EX_CONFIG (78) on a wrong config
    # (tests/test_cli_args.py::test_config_errors_exit_78_with_one_line); Restart=on-failure
    # would restart that in a loop, so the units name the status as final.
    from edgebus.cli.main import EXIT_CONFIG

    d = directives(name)
    assert d["Restart"] == ["on-failure"]
    assert d["RestartPreventExitStatus"] == [str(EXIT_CONFIG)] and EXIT_CONFIG == 78


@pytest.mark.parametrize("name", ["edgebus.service", "edgebus-bridge@.service"])
def test_every_service_directive_has_its_reason(name: str) -> None:
    """Each group of [Service] lines (lines between blank lines) carries a comment, and each
    deliberately absent protection says why it is absent."""
    text = (UNITS / name).read_text()
    service_part = text.split("[Service]", 1)[1].split("[Install]", 1)[0]
    for block in re.split(r"\n\s*\n", service_part):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if any(not ln.startswith("#") for ln in lines):
            assert any(ln.startswith("#") for ln in lines), f"no reason given for:\n{block}"
    i = text.index("\nPrivateUsers=")
    assert "NOT PrivateUsers" in text[max(0, i - 400):i], f"{name}: PrivateUsers needs its reason"
    i = text.index("\nPrivateDevices=")
    assert "memfd" in text[max(0, i - 400):i], f"{name}: PrivateDevices needs its reason"


# --- install-service ---------------------------------------------------------------------------

def test_packaged_units_are_the_ones_in_systemd_dir() -> None:
    for name in (*service.UNITS, service.CONFIG_TEMPLATE, service.SYSUSERS_TEMPLATE):
        assert service.template(name) == (UNITS / name).read_text()


def test_default_config_is_valid_and_fits_the_unit() -> None:
    c = load_config(UNITS / "edgebus.yaml")
    assert c.socket == Path("/run/edgebus/edgebus.sock")  # RuntimeDirectory=edgebus
    assert c.data_dir.parent == Path("/var/lib/edgebus")  # below StateDirectory (0700)
    assert c.socket_mode == 0o660


def test_install_service_into_a_scratch_root(tmp_path: Path) -> None:
    exe = tmp_path / "venv" / "bin" / "edgebus"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    root = tmp_path / "root"

    def install() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edgebus.cli.main", "install-service", "--root", str(root),
             "--exec", str(exe)], capture_output=True, text=True, timeout=60, cwd=ROOT)

    r = install()
    assert r.returncode == 0, r.stderr
    unit = (root / "etc/systemd/system/edgebus.service").read_text()
    assert f"ExecStart={exe} serve --config /etc/edgebus/edgebus.yaml" in unit
    bridge = (root / "etc/systemd/system/edgebus-bridge@.service").read_text()
    assert f"ExecStart={exe} bridge %i" in bridge
    config = root / "etc/edgebus/edgebus.yaml"
    assert load_config(config).socket == Path("/run/edgebus/edgebus.sock")
    assert (root / "etc/sysusers.d/edgebus.conf").exists()
    if shutil.which("systemd-sysusers"):
        assert re.search(r"^edgebus:x:\d+:\d+:", (root / "etc/passwd").read_text(), re.M)
        assert re.search(r"^edgebus:x:\d+:", (root / "etc/group").read_text(), re.M)
    assert "systemctl enable edgebus.service" in r.stdout

    # Again: units are refreshed, an operator's config is kept.
    config.write_text(config.read_text() + "\n# local change\n")
    r = install()
    assert r.returncode == 0, r.stderr
    assert config.read_text().endswith("# local change\n")
    assert f"keep {config}" in r.stdout


def test_install_refuses_an_executable_the_service_cannot_see() -> None:
    with pytest.raises(ServiceInstallError, match="ProtectHome"):
        service.find_executable("/home/pi/venv/bin/edgebus")
    with pytest.raises(ServiceInstallError, match="ProtectHome"):
        service.find_executable("/root/.venv/bin/edgebus")


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    steps = service.install(tmp_path, Path("/opt/edgebus/bin/edgebus"), dry=True)
    assert any("edgebus.service" in s for s in steps)
    assert list(tmp_path.iterdir()) == []


def test_install_refuses_an_executable_below_the_units_private_tmp() -> None:
    """(User trial: a checkout cloned to /tmp and its .venv's edgebus installed as the service.)"""
    exe = Path("/tmp/edgebus-checkout/.venv/bin/edgebus")
    with pytest.raises(ServiceInstallError, match="PrivateTmp"):
        service.check_visible_on_this_host(exe, Path("/"), dry=False)
    with pytest.raises(ServiceInstallError, match="PrivateTmp"):
        service.check_visible_on_this_host(Path("/var/tmp/v/bin/edgebus"), Path("/"), dry=False)
    # Into an image (--root) or only shown (--dry-run): the scratch-root tests install from /tmp.
    service.check_visible_on_this_host(exe, Path("/srv/image"), dry=False)
    service.check_visible_on_this_host(exe, Path("/"), dry=True)
    service.check_visible_on_this_host(Path("/opt/edgebus/bin/edgebus"), Path("/"), dry=False)
