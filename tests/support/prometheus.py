"""Prometheus on loopback for the tests: reading a scrape, a real Prometheus server and a
real node_exporter (Debian's `prometheus` and `prometheus-node-exporter`, which
scripts/bootstrap.sh installs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from support.testbed import TestbedError, free_port, wait_for


def parse(text: str) -> dict:
    """{(sample name, ((label, value), ...)): value} of a Prometheus text exposition."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(url: str) -> dict:
    """`parse` of what `url` answers (200 expected)."""
    response = requests.get(url, timeout=30)
    response.raise_for_status()
    return parse(response.text)


def value(samples: dict, name: str, **labels) -> float | None:
    """The sample `name{labels}` of a `parse` result, None when absent."""
    return samples.get((name, tuple(sorted(labels.items()))))


def by_label(samples: dict, name: str, label: str, **fixed) -> dict:
    """{value of `label`: sample} for the samples of `name` that also carry `fixed`."""
    found = {}
    for (sample, labels), number in samples.items():
        labels = dict(labels)
        if sample == name and all(labels.get(k) == v for k, v in fixed.items()):
            found[labels.get(label)] = number
    return found


def binary(name: str) -> str:
    exe = shutil.which(name)
    if not exe:
        raise TestbedError(f"{name} is missing: scripts/bootstrap.sh installs it (Debian "
                           "packages prometheus, prometheus-node-exporter)")
    return exe


class _Process:
    def __init__(self, root: Path, name: str):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.name = name
        self.process: subprocess.Popen | None = None
        self.log_path = self.root / f"{name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self, args: list[str], ready_path: str) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

        def ready():
            if self.process.poll() is not None:
                raise TestbedError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            return requests.get(self.url + ready_path, timeout=2).status_code == 200
        wait_for(ready, 60, f"{self.name} on {self.url}", interval=0.2)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class NodeExporter(_Process):
    """node_exporter with only its textfile collector, reading `textfile_dir`."""

    def __init__(self, root: Path, textfile_dir: Path):
        super().__init__(root, "node_exporter")
        self.textfile_dir = Path(textfile_dir)

    def start(self) -> "NodeExporter":
        self.textfile_dir.mkdir(parents=True, exist_ok=True)
        self._start([binary("prometheus-node-exporter"),
                     f"--web.listen-address=127.0.0.1:{self.port}",
                     "--collector.disable-defaults", "--collector.textfile",
                     f"--collector.textfile.directory={self.textfile_dir}"], "/metrics")
        return self


class PrometheusServer(_Process):
    """A Prometheus server scraping `targets` ({job: [host:port, ...]}) every second and
    evaluating `rule_files` every second."""

    def __init__(self, root: Path, targets: dict, rule_files: list[Path],
                 metrics_path: str = "/metrics"):
        super().__init__(root, "prometheus")
        self.config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": job, "metrics_path": metrics_path,
                                "static_configs": [{"targets": hosts}]}
                               for job, hosts in targets.items()],
        }

    def start(self) -> "PrometheusServer":
        config = self.root / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config))
        self._start([binary("prometheus"), f"--config.file={config}",
                     f"--storage.tsdb.path={self.root / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}"], "/-/ready")
        return self

    def query(self, expr: str) -> list:
        """The instant vector (or scalar) `expr` gives now; AssertionError on a bad query."""
        response = requests.get(f"{self.url}/api/v1/query", params={"query": expr},
                                timeout=30)
        body = response.json()
        assert body.get("status") == "success", f"{expr}: {body.get('error')}"
        return body["data"]["result"]

    def alerts(self) -> list:
        """/api/v1/alerts: every pending or firing alert."""
        return requests.get(f"{self.url}/api/v1/alerts", timeout=30).json()["data"]["alerts"]

    def alert_state(self, name: str, **labels) -> str | None:
        """"pending", "firing" or None for the alert `name` whose labels include `labels`."""
        for alert in self.alerts():
            if alert["labels"].get("alertname") == name and all(
                    alert["labels"].get(k) == v for k, v in labels.items()):
                return alert["state"]
        return None

    def targets_up(self) -> bool:
        active = requests.get(f"{self.url}/api/v1/targets", timeout=30).json()["data"][
            "activeTargets"]
        return bool(active) and all(target["health"] == "up" for target in active)
