"""What the roles render, rendered by ansible itself in the roles' own context.

The systemd sandbox of every photo-sync unit is written once, in
roles/photo_sync_common/templates/systemd-sandbox.j2; each unit renders it with its
own differences. The units must come out with the sandbox they have always had: a
directive lost here widens what a compromised agent or API could do. And the photo
server's health check must ask an address the server answers on, whatever
`edge_photo_sync_serve_bind` says (issue 19: `0.0.0.0:8081` once produced
`http://127.0.0.1\\2/health` and failed the rollout).
"""

from __future__ import annotations

import pytest

from support.role_probe import ROOT, run_probes, task_results

# The sandbox every unit shares, in the order the units list it.
SANDBOX = [
    "NoNewPrivileges=yes", "CapabilityBoundingSet=", "AmbientCapabilities=",
    "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes",
    "ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes", "ProtectClock=yes", "ProtectHostname=yes",
    "RestrictNamespaces=yes", "RestrictRealtime=yes", "RestrictSUIDSGID=yes",
    "LockPersonality=yes", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "SystemCallArchitectures=native", "SystemCallFilter=@system-service",
]
MDWE = "MemoryDenyWriteExecute=yes"
PRIVATE_PROC = ["DevicePolicy=closed", "ProtectProc=invisible", "ProcSubset=pid", "RemoveIPC=yes"]

# unit file -> (role, template, what its sandbox adds to SANDBOX)
UNITS = {
    "photo-sync-ho.service": ("ho_sync_api", "photo-sync-ho.service.j2",
                              ["SystemCallFilter=~@privileged"]),
    "photo-sync-s3.service": ("ho_sync_api", "photo-sync-s3.service.j2",
                              [MDWE, *PRIVATE_PROC, "SystemCallFilter=~@privileged @resources"]),
    "photo-sync-edge@.service": ("edge_photo_sync", "photo-sync-edge@.service.j2",
                                 [MDWE, "SystemCallFilter=~@privileged"]),
    "photo-sync-edge-verify.service": ("edge_photo_sync", "photo-sync-edge-verify.service.j2",
                                       [MDWE, "SystemCallFilter=~@privileged"]),
    "photo-sync-edge-serve.service": ("edge_photo_sync", "photo-sync-edge-serve.service.j2",
                                      [MDWE, "SystemCallFilter=~@privileged"]),
}
SANDBOX_KEYS = {line.split("=", 1)[0] for line in SANDBOX + [MDWE] + PRIVATE_PROC}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, str]:
    """Every unit, rendered by the template module inside its role (one ansible-playbook)."""
    tmp = tmp_path_factory.mktemp("units")
    probes: dict[tuple[str, str], list[dict]] = {}
    for unit, (role, template, _) in UNITS.items():
        probes.setdefault((role, "probe_units.yml"), []).append(
            {"name": f"Render {unit}",
             "ansible.builtin.template": {"src": template, "dest": str(tmp / unit),
                                          "mode": "0644"}})
    results = task_results(run_probes(tmp, probes))
    for unit in UNITS:
        assert not results[f"Render {unit}"].get("failed"), results[f"Render {unit}"]
    return {unit: (tmp / unit).read_text() for unit in UNITS}


def service_lines(text: str) -> list[str]:
    """The directives of the [Service] section, in order, comments left out."""
    lines, section = [], None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            lines.append(line)
    return lines


@pytest.mark.parametrize("unit", UNITS)
def test_unit_keeps_its_sandbox(rendered, unit):
    """Each unit's sandbox: the shared directives plus its own, each exactly once."""
    sandbox = [line for line in service_lines(rendered[unit])
               if line.split("=", 1)[0] in SANDBOX_KEYS]
    _, _, own = UNITS[unit]
    assert sorted(sandbox) == sorted(SANDBOX + own)


def test_the_api_unit_allows_write_execute_memory(rendered):
    """The one difference of the API's sandbox is kept, not levelled by the shared template."""
    assert MDWE not in rendered["photo-sync-ho.service"]
    assert "ProtectProc=" not in rendered["photo-sync-ho.service"]


def test_the_sandbox_is_written_once():
    """No role template spells the sandbox out again beside the shared one."""
    shared = ROOT / "roles/photo_sync_common/templates/systemd-sandbox.j2"
    copies = [path.relative_to(ROOT) for path in (ROOT / "roles").glob("*/templates/*.j2")
              if path != shared and "ProtectSystem=" in path.read_text()]
    assert copies == []
    assert "ProtectSystem=strict" in shared.read_text()


# bind -> the URL the health check must ask (the store asks itself).
BINDS = {
    "127.0.0.1:8090": "http://127.0.0.1:8090/health",
    "0.0.0.0:8081": "http://127.0.0.1:8081/health",
    "[::]:8081": "http://[::1]:8081/health",
    ":8082": "http://127.0.0.1:8082/health",
    "192.168.1.10:8081": "http://192.168.1.10:8081/health",
    "[fd00::10]:9000": "http://[fd00::10]:9000/health",
    "localhost:8090": "http://localhost:8090/health",
}


@pytest.fixture(scope="module")
def health_urls(tmp_path_factory) -> dict[str, str]:
    """The role's own health URL variable for each bind, in one ansible-playbook."""
    tmp = tmp_path_factory.mktemp("health")
    tasks = [{"name": f"Health URL for {bind}",
              "ansible.builtin.debug": {"msg": "{{ _edge_photo_sync_serve_health_url }}"},
              "vars": {"edge_photo_sync_serve_bind": bind}} for bind in BINDS]
    results = task_results(run_probes(tmp, {("edge_photo_sync", "probe_health.yml"): tasks}))
    return {bind: results[f"Health URL for {bind}"].get("msg") for bind in BINDS}


@pytest.mark.parametrize("bind", BINDS)
def test_health_check_asks_where_the_server_listens(health_urls, bind):
    """Wildcards map to loopback of their family, any other address to itself, same port."""
    assert health_urls[bind] == BINDS[bind]


def test_health_url_is_used_by_the_check():
    """The serve phase's /health check reads that variable, not a URL of its own."""
    serve = (ROOT / "roles/edge_photo_sync/tasks/serve.yml").read_text()
    assert 'url: "{{ _edge_photo_sync_serve_health_url }}"' in serve

