"""`mailwarden web` with two worker processes on one port: what one worker knows, the other knows;
connections are spread over both.

Which worker accepts a connection is the kernel's choice (a hash onto the workers' sockets), so
each test holds keep-alive connections it has seen accepted by a given worker (the server side of
the connection is found among that process's sockets in /proc) and asks one worker, then the
other. Without the state in the store, each worker kept its own lockout counters, /why counter
and login-form key in memory.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.support.mailwarden import PYTHON, Mailwarden
from tests.support.net import free_port
from tests.support.web import PASSWORD, form_token

pytestmark = pytest.mark.integration

ATTEMPTS = 400  # connections tried before giving up on reaching a given worker


@dataclass
class Served:
    status: int
    body: str


@dataclass
class WorkerClient:
    """A browser's keep-alive connection that worker process `pid` accepted, with its cookies."""

    conn: http.client.HTTPConnection
    pid: int
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Served:
        headers = {"cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["content-type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode()
        for header in response.headers.get_all("set-cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return Served(response.status, text)

    def login(self, name: str, password: str, csrf: str) -> Served:
        return self.request("POST", "/login", {"name": name, "password": password, "csrf": csrf, "next": "/search"})


@dataclass
class Web:
    port: int
    pids: tuple[int, int]

    def client(self, pid: int, cookies: dict[str, str] | None = None) -> WorkerClient:
        """A connection that worker `pid` accepted (others are closed again)."""
        for _ in range(ATTEMPTS):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            conn.request("GET", "/static/style.css")  # answered: the worker has accepted it
            conn.getresponse().read()
            assert conn.sock is not None
            if serving_pid(self.port, conn.sock.getsockname()[1], self.pids) == pid:
                return WorkerClient(conn, pid, dict(cookies or {}))
            conn.close()
        raise AssertionError(f"no connection reached worker {pid} in {ATTEMPTS} tries")


def serving_pid(server_port: int, client_port: int, pids: tuple[int, ...]) -> int | None:
    """Which of `pids` holds the server side of the connection from `client_port`."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, remote_port = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if local_port == server_port and remote_port == client_port:
            inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if str(fd.readlink()) in inodes:
                    return pid
            except OSError:
                continue
    return None


def children(pid: int) -> tuple[int, ...]:
    return tuple(int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())


def start_web(root: Path, store_url: str = "sqlite:///var/mailwarden.db") -> tuple[subprocess.Popen[bytes], Web]:
    """`mailwarden web` with two workers on the store `store_url`; returns once both are ready."""
    port = free_port()
    settings = {
        "listen": f"127.0.0.1:{port}",
        "workers": 2,
        "login_max_failures": 2,
        "login_failure_delay": 0.0,
        "why_per_minute": 2,
    }
    instance = Mailwarden(root, {"web": settings, "store": {"url": store_url}})
    instance.cli("accounts", "add", "support", "--role", "support", "--password-stdin", input=PASSWORD + "\n")
    log = root / "web.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [PYTHON, "-m", "mailwarden", "-c", str(instance.config), "web"], stdout=output, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while "mailwarden web ready" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(log.read_text())
        time.sleep(0.1)
    pids = children(process.pid)
    assert len(pids) == 2, pids
    return process, Web(port, (pids[0], pids[1]))


@pytest.fixture
def web(store_url: str, tmp_path: Path) -> Iterator[Web]:
    """Two web workers sharing what they know through the store, on each store."""
    process, started = start_web(tmp_path, store_url)
    try:
        yield started
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    log = (tmp_path / "web.log").read_text()
    assert code == 0, log
    assert "Traceback" not in log


def gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_a_login_form_from_one_web_worker_is_accepted_by_the_other(web: Web) -> None:
    first = web.client(web.pids[0])
    token = form_token(first.request("GET", "/login").body)
    second = web.client(web.pids[1], first.cookies)  # the browser's mw_pre cookie goes along
    answer = second.login("support", PASSWORD, token)
    assert answer.status == 303, answer.body  # not "the form has expired" (403)


def test_a_session_made_by_one_web_worker_is_valid_in_the_other_and_ended_there_for_both(web: Web) -> None:
    first = web.client(web.pids[0])
    assert first.login("support", PASSWORD, form_token(first.request("GET", "/login").body)).status == 303
    second = web.client(web.pids[1], first.cookies)
    page = second.request("GET", "/search")
    assert page.status == 200, page.body
    # The session's own CSRF token, from a page of the first worker, ends the session on the second.
    csrf = form_token(first.request("GET", "/search").body)
    assert second.request("POST", "/logout", {"csrf": csrf}).status == 303
    assert first.request("GET", "/search").status == 303  # back to the login


def test_failed_logins_counted_by_both_web_workers_lock_the_account_in_both(web: Web) -> None:
    first, second = web.client(web.pids[0]), web.client(web.pids[1])
    assert first.login("support", "wrong", form_token(first.request("GET", "/login").body)).status == 401
    assert second.login("support", "wrong", form_token(second.request("GET", "/login").body)).status == 429
    # The lock holds in the first worker too, even for the right password.
    refused = first.login("support", PASSWORD, form_token(first.request("GET", "/login").body))
    assert refused.status == 429, refused.body


def test_the_why_limit_counts_the_answers_of_every_web_worker(web: Web) -> None:
    first, second = web.client(web.pids[0]), web.client(web.pids[1])
    assert first.request("GET", "/why/AAAAAAAAAAAA").status == 200
    assert first.request("GET", "/why/AAAAAAAAAAAB").status == 200
    assert second.request("GET", "/why/AAAAAAAAAAAC").status == 429


def test_connections_opened_at_once_are_spread_over_the_web_workers_whichever_wakes_first(web: Web) -> None:
    """50 keep-alive connections opened while one worker cannot run (stopped): each worker serves its
    share once it runs. On one socket shared by both, the running worker accepted them all."""
    sleeper, runner = web.pids
    os.kill(sleeper, signal.SIGSTOP)
    try:
        connections = [socket.create_connection(("127.0.0.1", web.port), timeout=30) for _ in range(50)]
        for conn in connections:
            conn.sendall(b"GET /static/style.css HTTP/1.1\r\nHost: web\r\n\r\n")
    finally:
        os.kill(sleeper, signal.SIGCONT)
    served: dict[int | None, int] = {}
    for conn in connections:
        answer = http.client.HTTPResponse(conn)
        answer.begin()
        answer.read()
        assert answer.status == 200
        pid = serving_pid(web.port, conn.getsockname()[1], web.pids)
        served[pid] = served.get(pid, 0) + 1
    for conn in connections:
        conn.close()
    # The kernel hashes each connection onto one worker's socket: 25 each on average; fewer than 10
    # of 50 for one of them has a chance of about 1 in 200,000.
    assert served.get(sleeper, 0) >= 10 and served.get(runner, 0) >= 10, served


def test_a_second_mailwarden_web_on_the_port_of_a_running_one_is_refused_with_the_reason(tmp_path: Path) -> None:
    """The workers' sockets share their port by SO_REUSEPORT, which would let a second instance of the
    same user join them silently and take part of the connections."""
    process, web = start_web(tmp_path)
    try:
        second = subprocess.run(
            [PYTHON, "-m", "mailwarden", "-c", str(tmp_path / "config.toml"), "web"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr
        assert f"web.listen '127.0.0.1:{web.port}': cannot listen there" in second.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_a_web_worker_that_dies_ends_the_other_and_the_supervisor_with_a_failure(tmp_path: Path) -> None:
    process, web = start_web(tmp_path)
    try:
        os.kill(web.pids[0], signal.SIGKILL)
        assert process.wait(timeout=30) == 1  # the service manager sees it and restarts the whole
        assert gone(web.pids[1])
        assert f"worker process {web.pids[0]} ended" in (tmp_path / "web.log").read_text()
    finally:
        process.kill()


def test_the_web_workers_die_with_their_supervisor(tmp_path: Path) -> None:
    process, web = start_web(tmp_path)
    process.kill()
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    try:
        while not all(gone(pid) for pid in web.pids):
            assert time.monotonic() < deadline, "a web worker outlived its supervisor"
            time.sleep(0.05)
    finally:
        for pid in web.pids:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
