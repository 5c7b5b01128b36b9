"""CPython clients with their own timeouts (tests/src/apps.rs). Each prints one JSON line per
outcome, with its pid.

  client.py connect HOST PORT    socket.create_connection(timeout=1): TimeoutError when the
                                 SYN is never answered; the socket is closed (close)
  client.py read HOST PORT       connects, sends a request, recv with settimeout(1):
                                 TimeoutError, then close
  client.py keepalive HOST PORT  http.client: two GETs on one connection, 1.5 s idle, close
  client.py unread HOST PORT     sends data, then waits (at most 10 s) in recv for an answer
  client.py scan HOST PORT       100 non-blocking connects closed at once, then one closed
                                 after 50 ms
  client.py exit HOST PORT       starts a non-blocking connect, waits 1 s, and exits with
                                 status 3 without closing: the exit closes the socket
"""
import http.client
import json
import os
import socket
import sys
import time


def report(**kw):
    kw["pid"] = os.getpid()
    print(json.dumps(kw), flush=True)


def start_connect(host, port):
    """A non-blocking connect, left in progress."""
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect((host, port))
    except BlockingIOError:
        pass
    return s


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t0 = time.monotonic()
    if mode == "connect":
        try:
            s = socket.create_connection((host, port), timeout=1)
            report(outcome="connected", fd=s.fileno())
        except OSError as e:
            report(outcome=type(e).__name__, message=str(e), elapsed=time.monotonic() - t0)
    elif mode == "read":
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nHost: silent\r\n\r\n")
        s.settimeout(1)
        sent = time.monotonic()
        fd, sport = s.fileno(), s.getsockname()[1]
        try:
            data = s.recv(4096)
            report(outcome="answered" if data else "eof", fd=fd, sport=sport)
        except OSError as e:
            report(outcome=type(e).__name__, message=str(e), elapsed=time.monotonic() - sent, fd=fd, sport=sport)
        s.close()
    elif mode == "keepalive":
        conn = http.client.HTTPConnection(host, port, timeout=5)
        statuses, sports = [], []
        for _ in range(2):
            conn.request("GET", "/")
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
            sports.append(conn.sock.getsockname()[1])
        time.sleep(1.5)
        conn.close()
        report(outcome="closed", statuses=statuses, sports=sports, elapsed=time.monotonic() - t0)
    elif mode == "unread":
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"SET key value\r\n")
        fd, sport = s.fileno(), s.getsockname()[1]
        s.settimeout(10)
        try:
            data = s.recv(4096)
            report(outcome="answered" if data else "eof", fd=fd, sport=sport)
        except OSError as e:
            report(outcome=type(e).__name__, errno=e.errno, fd=fd, sport=sport, elapsed=time.monotonic() - t0)
        s.close()
    elif mode == "scan":
        for _ in range(100):
            start_connect(host, port).close()
        s = start_connect(host, port)
        sport = s.getsockname()[1]
        time.sleep(0.05)
        s.close()
        report(outcome="closed", sport=sport)
    elif mode == "exit":
        s = start_connect(host, port)
        time.sleep(1)
        report(outcome="exiting", fd=s.fileno(), sport=s.getsockname()[1])
        os._exit(3)
    else:
        sys.exit(f"unknown mode {mode}")


main()
