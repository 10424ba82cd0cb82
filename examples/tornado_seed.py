"""The seed article's Tornado server, one route per way of waiting (docs/design.md "Foreign loops").

    /                       hello world
    /sleep?ms=N             time.sleep on the IOLoop: every request waits behind it
    /async?ms=N             await asyncio.sleep: the loop serves others meanwhile
    /pool?ms=N              time.sleep on a ThreadPoolExecutor(--pool, 5) (run_on_executor)
    /fetch-blocking?ms=N    a blocking HTTP fetch (urllib) of the upstream, on the loop
    /fetch-async?ms=N       the same fetch with AsyncHTTPClient
    /cpu?ms=N               burns CPU on the loop

The upstream (/slow?ms=N answers after N ms) runs on threads of this process, on --port + 1.
With --processes N the server pre-forks N workers on one listening socket (Tornado's
fork_processes); each worker runs its own IOLoop, and the first one also the upstream.
It knows nothing of stallwatch: run it under `stallwatch run -- python3 examples/tornado_seed.py`.
"""
import argparse
import asyncio
import http.server
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import tornado.httpclient
import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.process
import tornado.web
from tornado.concurrent import run_on_executor


def millis(handler):
    return max(0, min(int(handler.get_argument("ms", "500")), 60000))


class Index(tornado.web.RequestHandler):
    def get(self):
        self.write("hello world")


class Sleep(tornado.web.RequestHandler):
    def get(self):
        time.sleep(millis(self) / 1000)
        self.write("slept on the loop")


class Async(tornado.web.RequestHandler):
    async def get(self):
        await asyncio.sleep(millis(self) / 1000)
        self.write("waited with asyncio.sleep")


class Pool(tornado.web.RequestHandler):
    executor = None  # ThreadPoolExecutor(--pool), made in main()

    @run_on_executor
    def work(self, ms):
        time.sleep(ms / 1000)
        return "slept on a worker"

    async def get(self):
        self.write(await self.work(millis(self)))


class FetchBlocking(tornado.web.RequestHandler):
    def get(self):
        url = "http://127.0.0.1:%d/slow?ms=%d" % (self.application.upstream_port, millis(self))
        with urllib.request.urlopen(url, timeout=30) as r:
            self.write(r.read())


class FetchAsync(tornado.web.RequestHandler):
    async def get(self):
        url = "http://127.0.0.1:%d/slow?ms=%d" % (self.application.upstream_port, millis(self))
        r = await tornado.httpclient.AsyncHTTPClient().fetch(url, request_timeout=30)
        self.write(r.body)


class Cpu(tornado.web.RequestHandler):
    def get(self):
        end = time.monotonic() + millis(self) / 1000
        n = 0
        while time.monotonic() < end:
            n += 1
        self.write("burned %d rounds" % n)


class Slow(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ms = int(self.path.partition("ms=")[2] or "500")
        time.sleep(ms / 1000)
        body = b"upstream answered after %d ms" % ms
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8888)
    p.add_argument("--pool", type=int, default=5,
                   help="threads of the /pool executor (default 5, as in the seed article)")
    p.add_argument("--processes", type=int, default=1,
                   help="pre-fork this many workers on one listening socket (default 1: none)")
    args = p.parse_args()
    Pool.executor = ThreadPoolExecutor(max(1, args.pool))
    sockets = tornado.netutil.bind_sockets(args.port, address="127.0.0.1")
    task = 0
    if args.processes > 1:
        task = tornado.process.fork_processes(args.processes, max_restarts=0)
    if task == 0:
        upstream = http.server.ThreadingHTTPServer(("127.0.0.1", args.port + 1), Slow)
        threading.Thread(target=upstream.serve_forever, daemon=True).start()
    app = tornado.web.Application([
        (r"/", Index), (r"/sleep", Sleep), (r"/async", Async), (r"/pool", Pool),
        (r"/fetch-blocking", FetchBlocking), (r"/fetch-async", FetchAsync), (r"/cpu", Cpu),
    ])
    app.upstream_port = args.port + 1
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    if task == 0:
        print("tornado_seed listening on 127.0.0.1:%d (upstream :%d, %d process%s)"
              % (args.port, args.port + 1, args.processes, "" if args.processes == 1 else "es"),
              flush=True)
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main()
