"""The upstream side of the application-timeout tests (tests/src/apps.rs), run inside the
upstream network namespace. Each mode prints `listening` once its socket is bound.

  servers.py silent ADDR PORT   accepts, reads whatever it is sent and never answers; every
                                connection stays open until the peer closes it or this
                                process is killed
  servers.py http ADDR PORT     a normal HTTP/1.1 server (keep-alive) answering every GET
  servers.py killed ADDR PORT   the peer a test kills with SIGKILL: named `redis-like` (its
                                /proc/PID/comm), accepts one connection and never reads it;
                                prints `holding UNREAD` once the client's data has arrived
"""
import ctypes
import fcntl
import http.server
import os
import select
import selectors
import socket
import struct
import sys
import termios
import threading
import time


def silent(addr, port):
    srv = socket.create_server((addr, port), backlog=64)
    srv.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    print("listening", flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is srv:
                try:
                    c, _ = srv.accept()
                except BlockingIOError:
                    continue
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                s.close()


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def http_server(addr, port):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    server_class = type("Server", (http.server.ThreadingHTTPServer,), {"address_family": family})
    server = server_class((addr, port), Hello)
    print("listening", flush=True)
    server.serve_forever()


libc = ctypes.CDLL(None, use_errno=True)
PR_SET_NAME = 15
CLONE_FILES = 0x400


def set_comm(name):
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()), 0, 0, 0)


def killed(addr, port):
    # The name socktrace must give when this process is killed. Threads started from here on
    # inherit it until they name themselves.
    set_comm("redis-like")
    srv = socket.create_server((addr, port))
    print("listening", flush=True)
    conn, _ = srv.accept()
    srv.close()
    # Wait (at most 5 s) for the client's data, and leave it unread.
    select.select([conn], [], [], 5)
    unread = struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    fd = conn.detach()
    handed = threading.Event()

    def bio():
        # Like redis's background threads (bio_close_file, ...): this thread takes the
        # connection into a file table of its own (unshare(CLONE_FILES) copies the table),
        # and the main thread drops its copy below. The last reference is then this thread's,
        # so when SIGKILL ends the process the socket is closed, and its RST sent, in this
        # thread's exit, not the main thread's.
        set_comm("bio_close_file")
        if libc.unshare(CLONE_FILES) != 0:
            err = ctypes.get_errno()
            print(f"unshare(CLONE_FILES): {os.strerror(err)}", file=sys.stderr, flush=True)
            os._exit(1)
        handed.set()
        while True:
            time.sleep(3600)

    threading.Thread(target=bio, daemon=True).start()
    handed.wait(5)
    os.close(fd)
    print(f"holding {unread}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    {"silent": silent, "http": http_server, "killed": killed}[mode](addr, port)
