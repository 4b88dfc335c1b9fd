"""The HO gateway (nginx) on loopback, rendered from the role's own template.

`Gateway` makes a throwaway CA and a server certificate for 127.0.0.1/localhost, renders
`roles/ho_gateway/templates/nginx.conf.j2` with plain Jinja2 from the role's defaults plus
overrides (so the tests run the very config the role deploys), and runs
`nginx -c FILE -p DIR` unprivileged on free loopback ports. Nothing here runs in production.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import subprocess
import time
from pathlib import Path

import jinja2
import yaml
from ansible.module_utils.parsing.convert_bool import boolean

from support.testbed import TestbedError, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "ho_gateway"
TEMPLATE = ROLE / "templates" / "nginx.conf.j2"
DEFAULTS = ROLE / "defaults" / "main.yml"
NGINX = "/usr/sbin/nginx"


def nginx_missing() -> str | None:
    """Why nginx cannot run here (for pytest.skip), or None when it can."""
    if not os.access(NGINX, os.X_OK):
        return f"{NGINX} is not installed (scripts/bootstrap.sh installs nginx-light)"
    return None


def role_defaults() -> dict:
    """The ho_gateway role's defaults as plain values (what the template reads)."""
    return yaml.safe_load(DEFAULTS.read_text()) or {}


def render(overrides: dict | None = None) -> str:
    """nginx.conf from the role's template: the role's defaults, then `overrides`."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE.parent)),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True)
    # The template reads flags through Ansible's `bool` filter (so `-e flag=false` works);
    # plain Jinja2 has none, so give it Ansible's own conversion.
    env.filters["bool"] = lambda value: boolean(value, strict=False)
    return env.get_template(TEMPLATE.name).render({**role_defaults(), **(overrides or {})})


class TLSMaterial:
    """A private CA and a server certificate for 127.0.0.1 and localhost, as PEM files."""

    def __init__(self, folder: Path):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        folder.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "photo-sync test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - dt.timedelta(minutes=5))
              .not_valid_after(now + dt.timedelta(days=2))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                           False), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem = serialization.Encoding.PEM
        self.ca_path = folder / "ca.crt"
        self.cert_path = folder / "server.crt"
        self.key_path = folder / "server.key"
        self.ca_path.write_bytes(ca.public_bytes(pem))
        self.cert_path.write_bytes(cert.public_bytes(pem))
        self.key_path.write_bytes(key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.key_path.chmod(0o600)


class Gateway:
    """nginx from the role template on free loopback ports, in front of given API hosts and S3.

    `api_upstreams` are host:port of gunicorn; `s3_endpoint` is the host:port the API's
    PHOTO_SYNC_HO_S3_ENDPOINT names (nginx connects there and sends it as Host)."""

    def __init__(self, root: Path, api_upstreams: list[str], s3_endpoint: str, bucket: str,
                 tls: TLSMaterial | None = None, **overrides):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tls = tls or TLSMaterial(self.root / "tls")
        self.https_port = free_port()
        self.http_port = free_port()
        self.access_log = self.root / "access.log"
        self.error_log = self.root / "error.log"
        self.conf = self.root / "nginx.conf"
        self.values = {
            # As root the workers would switch to www-data and lose the private temp folder.
            "ho_gateway_user": "root" if os.geteuid() == 0 else "",
            "ho_gateway_worker_processes": 2,
            "ho_gateway_worker_connections": 512,
            "ho_gateway_pid_file": str(self.root / "nginx.pid"),
            "ho_gateway_error_log": str(self.error_log),
            "ho_gateway_access_log": str(self.access_log),
            "ho_gateway_temp_dir": str(self.root / "temp"),
            "ho_gateway_listen_address": "127.0.0.1",
            "ho_gateway_https_port": self.https_port,
            "ho_gateway_http_port": self.http_port,
            "ho_gateway_tls_cert_path": str(self.tls.cert_path),
            "ho_gateway_tls_key_path": str(self.tls.key_path),
            "ho_gateway_api_upstreams": list(api_upstreams),
            "ho_gateway_s3_upstream": s3_endpoint,
            "ho_gateway_s3_host": s3_endpoint,
            "ho_gateway_s3_bucket": bucket,
            **overrides,
        }
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The gateway's https origin (as a store's PHOTO_SYNC_EDGE_HO_URL)."""
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def host(self) -> str:
        """host:port of the https listener (for PHOTO_SYNC_HO_S3_PUBLIC_ENDPOINT)."""
        return f"127.0.0.1:{self.https_port}"

    def write_config(self) -> Path:
        """Render the role's template with this gateway's values; check it with nginx -t."""
        (self.root / "temp").mkdir(exist_ok=True)
        self.conf.write_text(render(self.values))
        result = subprocess.run([NGINX, "-t", "-q", "-c", str(self.conf), "-p", str(self.root)],
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise TestbedError(f"nginx -t refused {self.conf}: {result.stderr}")
        return self.conf

    def start(self) -> "Gateway":
        """Start nginx in the foreground of its own process group; wait for the port."""
        why = nginx_missing()
        if why:
            raise TestbedError(why)
        self.write_config()
        log = open(self.root / "nginx.out", "ab")
        self.process = subprocess.Popen(
            [NGINX, "-c", str(self.conf), "-p", str(self.root), "-g", "daemon off;"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(self._listening, 20, f"nginx on {self.url}", interval=0.1)
        return self

    def _listening(self) -> bool:
        import socket
        if self.process.poll() is not None:
            raise TestbedError(f"nginx exited: {self.error_log.read_text()[-2000:]}")
        with socket.create_connection(("127.0.0.1", self.https_port), timeout=1):
            return True

    def reconfigure(self, **overrides) -> None:
        """Render again with `overrides` and reload nginx (SIGHUP); old workers drain."""
        self.values.update(overrides)
        self.write_config()
        self.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)  # the new workers take over within milliseconds; be generous

    def access_entries(self) -> list[dict]:
        """The access log as parsed JSON lines (written when each request ends)."""
        import json
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line]

    def slow_reader(self, path: str, headers: dict | None = None):
        """A TLS connection that asks for `path` and reads only the first bytes: nginx keeps
        the download (and its limit_conn slot) open while the client does not read."""
        import socket
        import ssl
        context = ssl.create_default_context(cafile=str(self.tls.ca_path))
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(10)
        raw.connect(("127.0.0.1", self.https_port))
        sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        lines = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}\r\n".encode())
        head = sock.recv(1024)
        if not head.startswith(b"HTTP/1.1 200"):
            sock.close()
            raise TestbedError(f"a slow reader of {path} was answered {head[:200]!r}")
        return sock

    def stop(self) -> None:
        """Stop nginx (SIGQUIT, then SIGKILL to the group after 10 s)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    close = stop
