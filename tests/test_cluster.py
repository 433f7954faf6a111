"""Several machines' worth on loopback: nginx (docs/deploy/nginx.conf) in front of three instances
sharing one PostgreSQL and one Redis, all real and started by the test."""
import asyncio
import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import tornado.websocket

from bench.ports import free_port, wait_port
from helpers import PROJECT_ROOT, BenchRun, LiveServer, nginx_binary, require

NGINX_CONF = PROJECT_ROOT / "docs" / "deploy" / "nginx.conf"


class Cluster:
    """Three instances on fixed ports behind nginx; instances can be stopped and started again."""

    def __init__(self, postgres_url, redis_url):
        # one cookie secret file for all three, so a form signed by one is accepted by another
        self.secrets = Path(tempfile.mkdtemp(prefix="hps-secret-"))
        self.common = ["--db-url", postgres_url, "--cache-url", redis_url, "--trusted-proxies",
                       "127.0.0.1/32", "--access-log", "off", "--post-rate", "off",
                       "--shutdown-timeout", "10", "--cookie-secret-file",
                       str(self.secrets / "cookie_secret")]
        self.ports = [free_port() for _ in range(3)]
        self.instances, self.nginx = [], None
        self.base = Path(tempfile.mkdtemp(prefix="hps-nginx-"))
        try:
            self.instances.extend(self.start_instance(i) for i in range(3))
            self.start_nginx()
        except BaseException:
            self.close()  # what did start is stopped, its pipes closed, before the error is shown
            raise

    def start_nginx(self):
        self.base.chmod(0o755)
        self.port = free_port()
        site = NGINX_CONF.read_text()
        ports = iter(self.ports)
        site = re.sub(r"server 127\.0\.0\.1:800\d", lambda _: f"server 127.0.0.1:{next(ports)}", site)
        site = site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        (self.base / "site.conf").write_text(site)
        (self.base / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
pid {self.base}/nginx.pid;
error_log {self.base}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {self.base}/body;
    proxy_temp_path {self.base}/proxy;
    fastcgi_temp_path {self.base}/fastcgi;
    uwsgi_temp_path {self.base}/uwsgi;
    scgi_temp_path {self.base}/scgi;
    include {self.base}/site.conf;
}}
""")
        self.nginx = subprocess.Popen([nginx_binary(), "-c", str(self.base / "nginx.conf"),
                                       "-g", "daemon off;"], stderr=subprocess.PIPE)
        wait_port(self.port, 10)
        self.url = f"http://127.0.0.1:{self.port}"

    def start_instance(self, index):
        instance = LiveServer("--port", str(self.ports[index]), *self.common)
        try:
            return instance.wait_ready()
        except BaseException:
            instance.stop()
            raise

    def restart_instance(self, index):
        old = self.instances[index]
        old.signal(signal.SIGTERM)
        assert old.wait() == 0
        old.stop()
        self.instances[index] = self.start_instance(index)

    def close(self):
        if self.nginx is not None:
            self.nginx.terminate()
            self.nginx.communicate(timeout=10)
        for instance in self.instances:
            instance.stop()
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.secrets, ignore_errors=True)


@pytest.fixture
def cluster(postgres_url, redis_url):
    require(nginx_binary() is not None, "nginx (apt-get install nginx)")
    cluster = Cluster(postgres_url, redis_url)
    yield cluster
    cluster.close()


def call(url, method="GET", body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, method=method, data=data,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read()), response.headers


def test_post_through_one_instance_read_through_every_other(cluster):
    first = cluster.instances[0].url
    status, created, _ = call(first + "/api/messages", "POST", {"name": "Ada", "text": "written on 1"})
    assert status == 201
    for instance in cluster.instances[1:]:
        status, page, _ = call(instance.url + "/api/messages")
        assert page["messages"][0] == created  # shared database, no stale cache anywhere
    status, page, headers = call(cluster.url + "/api/messages")
    assert page["messages"][0] == created and headers["X-Request-ID"]


def test_forms_signed_by_one_instance_are_accepted_by_another(cluster):
    with urllib.request.urlopen(cluster.instances[0].url + "/guestbook", timeout=10) as response:
        cookie = response.headers["Set-Cookie"].split(";", 1)[0]
        token = re.search(r'name="_xsrf" value="([^"]+)"', response.read().decode()).group(1)
    form = urllib.parse.urlencode({"_xsrf": token, "name": "Form", "text": "signed on 1, posted on 2"})
    request = urllib.request.Request(cluster.instances[1].url + "/guestbook", data=form.encode(),
                                     headers={"Cookie": cookie,
                                              "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as response:  # follows the 303
        assert response.status == 200 and "signed on 1, posted on 2" in response.read().decode()


def test_live_page_through_nginx_sees_messages_from_any_instance(cluster):
    async def scenario():
        ws_url = cluster.url.replace("http", "ws") + "/guestbook/live"
        conn = await tornado.websocket.websocket_connect(ws_url)
        await asyncio.sleep(0.3)
        received = []
        for index, instance in enumerate(cluster.instances):
            await asyncio.get_running_loop().run_in_executor(
                None, call, instance.url + "/api/messages", "POST",
                {"name": f"i{index}", "text": f"via {index}"})
            event = json.loads(await asyncio.wait_for(conn.read_message(), 1.0))
            received.append(event["message"]["text"])
        conn.close()
        return received
    loop = asyncio.new_event_loop()  # not asyncio.run: it would unset the thread's event loop
    try:
        assert loop.run_until_complete(scenario()) == ["via 0", "via 1", "via 2"]
    finally:
        loop.close()


def test_stopping_one_instance_under_load_fails_no_get(cluster, tmp_path):
    load = BenchRun(cluster.url + "/api/hello/cluster", 6, tmp_path / "stop.json", connections=16)
    time.sleep(2)
    cluster.instances[1].signal(signal.SIGTERM)
    assert cluster.instances[1].wait() == 0
    result = load.result()
    assert result["requests"]["errors_total"] == 0, result["requests"]["errors"]
    assert set(result["requests"]["responses"]) == {"200"}, result["requests"]["responses"]
    assert result["requests"]["responses"]["200"] > 500


def test_rolling_restart_of_all_three_fails_no_request(cluster, tmp_path):
    load = BenchRun(cluster.url + "/api/hello/rolling", 14, tmp_path / "roll.json", connections=16)
    time.sleep(1)
    old_pids = [instance.proc.pid for instance in cluster.instances]
    for index in range(3):
        cluster.restart_instance(index)
        time.sleep(0.5)
    result = load.result()
    assert not set(old_pids) & {instance.proc.pid for instance in cluster.instances}
    assert result["requests"]["errors_total"] == 0, result["requests"]["errors"]
    assert result["connections"]["failed_total"] == 0, result["connections"]["failed"]
    assert set(result["requests"]["responses"]) == {"200"}, result["requests"]["responses"]
