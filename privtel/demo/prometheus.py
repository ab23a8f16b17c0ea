"""A real Prometheus (the Debian `prometheus` binary) in a scratch directory.

The demo starts one to scrape its collector and agent with the shipped rules;
tests and bench/metrics.py start one as a remote-write receiver or to run the
dashboards' queries. Blocking calls: async callers use `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from privtel.demo import children
from privtel.demo.snmpsim import die_with_parent

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "privtel-alerts.yml"


def binary() -> str | None:
    return shutil.which("prometheus")


def scrape_config(*, collector: list[str], agent: list[str], agent_labels: dict[str, str],
                  interval_s: float = 5.0, rules: Path | None = RULES) -> dict[str, Any]:
    """The shipped jobs (`privtel-collector`, `privtel-agent` with its target labels) on
    static targets, scraped every `interval_s`."""
    every = f"{max(1, int(interval_s))}s"
    jobs = [{"job_name": "privtel-collector", "static_configs": [{"targets": collector}]}]
    if agent:
        jobs.append({"job_name": "privtel-agent",
                     "static_configs": [{"targets": agent, "labels": agent_labels}]})
    cfg: dict[str, Any] = {"global": {"scrape_interval": every, "evaluation_interval": every},
                           "scrape_configs": jobs}
    if rules is not None:
        cfg["rule_files"] = [str(rules)]
    return cfg


class Prometheus:
    """One Prometheus on 127.0.0.1:port with `config` (a dict written as YAML);
    `receiver=True` adds `--web.enable-remote-write-receiver`."""

    def __init__(self, port: int, config: dict[str, Any] | None = None, *,
                 receiver: bool = False, workdir: Path | None = None,
                 extra_args: tuple[str, ...] = (),
                 tls: tuple[Path, Path, Path] | None = None) -> None:
        """`tls`: (certificate, key, CA that signed it) to serve HTTPS only."""
        self.port, self.receiver, self.extra_args, self.tls = port, receiver, extra_args, tls
        self._ctx = None if tls is None else ssl.create_default_context(cafile=str(tls[2]))
        self.config = config or {"global": {"scrape_interval": "15s"}}
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="privtel-prometheus-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def write_url(self) -> str:
        return f"{self.url}/api/v1/write"

    @property
    def log(self) -> Path:
        return self.workdir / "prometheus.log"

    def start(self, timeout_s: float = 60.0) -> Prometheus:
        self.launch()
        self.wait_ready(timeout_s)
        return self

    def launch(self) -> None:
        """Start the process (from the thread that will outlive it: the child is told to
        stop when that thread ends)."""
        exe = binary()
        if exe is None:
            raise FileNotFoundError("prometheus is not installed (apt-get install prometheus)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(json.dumps(self.config, indent=1))  # JSON is YAML
        args = [exe, f"--config.file={cfg}", f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.tsdb.path={self.workdir / 'data'}", "--log.level=warn",
                *(["--web.enable-remote-write-receiver"] if self.receiver else []),
                *self.extra_args]
        if self.tls is not None:
            web = self.workdir / "web.yml"
            web.write_text(json.dumps({"tls_server_config": {
                "cert_file": str(self.tls[0]), "key_file": str(self.tls[1])}}))
            args.append(f"--web.config.file={web}")
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: "
                                   f"{self.log.read_text()[-1000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2,
                                            context=self._ctx) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"prometheus not ready on {self.url} in {timeout_s:.0f}s")

    def stop(self) -> None:
        children.stop(self.proc, 10)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def api(self, path: str, **params: Any) -> Any:
        """`data` of a GET on the HTTP API; an error status raises with Prometheus' reason."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30, context=self._ctx) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            raise ValueError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        return list(self.api("query", **params)["result"])
