"""Starts the real edge-gateway binary on free loopback ports; publishes with mosquitto_pub."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("EDGE_GATEWAY_BIN", str(ROOT / "target" / "debug" / "edge-gateway"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    def __init__(self, data_dir, env=None, args=()):
        self.data_dir = data_dir
        self.extra_env = dict(env or {})
        self.args = list(args)
        self.proc = None

    def start(self):
        self.http_port = free_port()
        self.mqtt_port = free_port()
        env = {
            "PATH": os.environ["PATH"],
            "HOST": "127.0.0.1",
            "PORT": str(self.http_port),
            "EDGE_GATEWAY_MQTT__LISTEN": f"127.0.0.1:{self.mqtt_port}",
            "EDGE_GATEWAY_GATEWAY_ID": "pytest-gw",
            "RATE_LIMIT_MAX_REQUESTS": "100000",
            "LOG_LEVEL": "warn",
        }
        env.update(self.extra_env)
        self.log = open(os.path.join(self.data_dir, "gateway.log"), "ab")
        self.proc = subprocess.Popen(
            [BIN, "run", "--data-dir", self.data_dir, *self.args],
            env=env, stdout=self.log, stderr=self.log,
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"gateway exited ({self.proc.returncode}) before /health answered; "
                    f"gateway.log (last lines):\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError(
            f"gateway did not become healthy; gateway.log (last lines):\n{self.log_tail()}")

    def log_tail(self, lines=40):
        with open(self.log.name, "rb") as f:
            text = f.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    @property
    def url(self):
        return f"http://127.0.0.1:{self.http_port}"

    def publish(self, topic, payload, qos=1):
        subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.mqtt_port), "-q", str(qos),
             "-t", topic, "-m", payload if isinstance(payload, str) else json.dumps(payload)],
            check=True, timeout=10,
        )

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode if self.proc else None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def data_dir():
    with tempfile.TemporaryDirectory(prefix="egw-py-") as d:
        yield d


@pytest.fixture
def gateway(data_dir):
    gws = []

    def make(env=None, args=()):
        gw = Gateway(data_dir, env, args).start()
        gws.append(gw)
        return gw

    yield make
    for gw in gws:
        gw.stop()
