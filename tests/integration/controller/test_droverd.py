#!/usr/bin/env python3
"""droverd as operators and agents meet it: the real binary, real HTTP on
loopback, a real SQLite file, and ctl-fakeagent playing agents over the real
protocol. Every HTTP response any test receives is validated against
controller/openapi.yaml (the path, method and status must be documented,
and the body must match that response's schema), and the Api group checks
that every documented path and method was exercised.

  test_droverd.py --droverd BIN --fakeagent BIN --openapi FILE GROUP
GROUP: Api, Agents, Restart, Cli (or a unittest name inside them)."""
import argparse
import copy
import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import jsonschema
import yaml

ARGS = None
HEARTBEAT_TIMEOUT_S = 3          # agents beat every second


# ---------------------------------------------------------------- OpenAPI

def openapi_to_jsonschema(node):
    """OpenAPI 3.0 schemas are JSON Schema (draft 4/5 era) but for
    `nullable`, which becomes anyOf [..., null]."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: openapi_to_jsonschema(v) for k, v in node.items()}
    if out.pop("nullable", False):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time")
def _is_datetime(value):
    if not isinstance(value, str):
        return True
    return re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value) is not None


class OpenApi:
    def __init__(self, path):
        with open(path) as f:
            self.raw = yaml.safe_load(f)
        self.spec = openapi_to_jsonschema(self.raw)
        self.resolver = jsonschema.RefResolver.from_schema(self.spec)
        self.paths = []
        for p in self.raw["paths"]:
            rx = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(p)) + "$"
            self.paths.append((re.compile(rx), p))
        self.seen = set()
        self.checked = 0

    def documented(self):
        out = set()
        for p, item in self.raw["paths"].items():
            for m in item:
                if m in ("get", "post", "put", "delete", "patch"):
                    out.add((p, m.upper()))
        return out

    def _deref(self, node):
        while isinstance(node, dict) and "$ref" in node:
            parts = node["$ref"].lstrip("#/").split("/")
            node = self.raw
            for part in parts:
                node = node[part]
        return node

    def _validate(self, schema, doc, where):
        schema = openapi_to_jsonschema(schema)
        v = jsonschema.Draft4Validator(schema, resolver=self.resolver, format_checker=FORMATS)
        errors = sorted(v.iter_errors(doc), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            raise AssertionError("%s: response does not match openapi.yaml: %s at %s\nbody: %s"
                                 % (where, e.message, "/".join(map(str, e.path)) or "(top)",
                                    json.dumps(doc)[:2000]))

    def check(self, method, path, status, headers, body):
        path = path.split("?", 1)[0]
        where = "%s %s -> %d" % (method, path, status)
        self.checked += 1
        ctype = headers.get("Content-Type", "")
        assert ctype.startswith("application/json"), "%s: Content-Type %r" % (where, ctype)
        doc = json.loads(body)
        tmpl = next((t for rx, t in self.paths if rx.match(path)), None)
        error_schema = {"$ref": "#/components/schemas/Error"}
        if tmpl is None:
            # Paths openapi.yaml does not list: 404 (or 413 before routing).
            assert status in (404, 413), "%s: an undocumented path must be 404" % where
            self._validate(error_schema, doc, where)
            return doc
        op = self.raw["paths"][tmpl].get(method.lower())
        if op is None:
            assert status in (405, 413), "%s: an undocumented method must be 405" % where
            if status == 405:
                assert headers.get("Allow"), "%s: 405 without Allow" % where
            self._validate(error_schema, doc, where)
            return doc
        self.seen.add((tmpl, method))
        resp = op["responses"].get(str(status))
        assert resp is not None, "%s: status %d is not documented for %s %s" % (
            where, status, method, tmpl)
        resp = self._deref(resp)
        schema = resp["content"]["application/json"]["schema"]
        self._validate(schema, doc, where)
        if status == 401:
            assert headers.get("WWW-Authenticate", "").startswith("Bearer"), where
        if status == 202:
            assert headers.get("Location", "").startswith("/v1/operations/"), where
        return doc


API = None


# ---------------------------------------------------------------- processes

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Droverd:
    """droverd serve on loopback, its stderr collected."""

    def __init__(self, tmp, extra=(), db=None, http_port=0, agent_port=0):
        self.tmp = tmp
        self.db = db or os.path.join(tmp, "droverd.db")
        self.extra = list(extra)
        self.http_port = http_port
        self.agent_port = agent_port
        self.proc = None
        self.lines = []

    def argv(self):
        return [ARGS.droverd, "serve", "--db", self.db,
                "--listen", "127.0.0.1:%d" % self.http_port,
                "--agent-listen", "127.0.0.1:%d" % self.agent_port,
                "--heartbeat-timeout-s", str(HEARTBEAT_TIMEOUT_S), "--op-timeout-s", "20",
                "--log-level", "debug"] + self.extra

    def start(self):
        self.lines = []
        self.proc = subprocess.Popen(self.argv(), stderr=subprocess.PIPE, text=True)
        ready = threading.Event()

        def reader(proc, lines):
            for line in proc.stderr:
                lines.append(line.rstrip("\n"))
                if "REST API on" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=reader, args=(self.proc, self.lines), daemon=True).start()
        if not ready.wait(10) or self.proc.poll() is not None:
            raise AssertionError("droverd did not start:\n" + "\n".join(self.lines))
        m = re.search(r"REST API on \S+ \(port (\d+)\), agents on \S+ \(port (\d+)\)",
                      "\n".join(self.lines))
        self.http_port, self.agent_port = int(m.group(1)), int(m.group(2))
        return self

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("droverd did not stop on %s" % sig)
        return self.proc.returncode if self.proc else None

    def alive(self):
        return self.proc.poll() is None

    def log(self):
        return "\n".join(self.lines)


def token(db, role, name="test", extra=()):
    r = subprocess.run([ARGS.droverd, "token", "create", "--db", db, "--role", role,
                        "--name", name] + list(extra), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    tok = r.stdout.strip()
    assert re.fullmatch(r"drv_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", tok), tok
    return tok


class Response:
    def __init__(self, status, headers, doc):
        self.status, self.headers, self.doc = status, headers, doc

    def __repr__(self):
        return "<%d %s>" % (self.status, json.dumps(self.doc)[:500])


class Client:
    def __init__(self, port, tok):
        self.port, self.token = port, tok

    def call(self, method, path, body=None, token=Ellipsis, headers=None, raw=None,
             content_type="application/json"):
        h = dict(headers or {})
        tok = self.token if token is Ellipsis else token
        if tok is not None:
            h["Authorization"] = "Bearer " + tok
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None and content_type is not None:
            h["Content-Type"] = content_type
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        text = r.read()
        c.close()
        doc = API.check(method, path, r.status, r.headers, text)
        return Response(r.status, r.headers, doc)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)

    def ok(self, method, path, body=None, status=200, **kw):
        r = self.call(method, path, body, **kw)
        assert r.status == status, "%s %s: want %d, got %r" % (method, path, status, r)
        return r.doc


class Agents:
    """ctl-fakeagent: commands in, events out (both JSON lines)."""

    def __init__(self, addr):
        self.proc = subprocess.Popen([ARGS.fakeagent, addr], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.events = []
        self.cond = threading.Condition()
        self.used = set()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.events.append(json.loads(line))
                self.cond.notify_all()

    def send(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def expect(self, timeout=10, **match):
        """The first event matching every key=value not returned before."""
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for i, e in enumerate(self.events):
                    if i not in self.used and all(e.get(k) == v for k, v in match.items()):
                        self.used.add(i)
                        return e
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError("no agent event %r; events: %s" % (match, self.events[-20:]))
                self.cond.wait(left)

    def none(self, wait=0.5, **match):
        time.sleep(wait)
        with self.cond:
            for i, e in enumerate(self.events):
                if i not in self.used and all(e.get(k) == v for k, v in match.items()):
                    raise AssertionError("unexpected agent event %r" % e)

    def connect(self, name, wait=True, **kw):
        kw.setdefault("host_id", "id-" + name)
        kw.setdefault("host_name", name)
        self.send(op="connect", agent=name, **kw)
        if wait:
            return self.expect(ev="welcome", agent=name)
        return None

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_until(fn, timeout=10, what="condition"):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def vm_def(name, **kw):
    d = {"name": name, "vcpus": 1, "memory": 256, "boot": {"kernel": "/srv/guest.elf"}}
    d.update(kw)
    return d


class Base(unittest.TestCase):
    """One droverd (and one fake agent process) per test class."""
    extra = ()

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="drover-ctl-test-")
        cls.admin_token = token(os.path.join(cls.tmp, "droverd.db"), "admin", "admin")
        cls.reader_token = token(os.path.join(cls.tmp, "droverd.db"), "reader", "reader")
        cls.d = Droverd(cls.tmp, cls.extra).start()
        cls.api = Client(cls.d.http_port, cls.admin_token)
        cls.reader = Client(cls.d.http_port, cls.reader_token)
        cls.agents = Agents("127.0.0.1:%d" % cls.d.agent_port)

    @classmethod
    def tearDownClass(cls):
        cls.agents.close()
        rc = cls.d.stop()
        failed = rc != 0
        if failed or os.environ.get("DROVER_TEST_VERBOSE"):
            sys.stderr.write(cls.d.log()[-20000:] + "\n")
        shutil.rmtree(cls.tmp, ignore_errors=True)
        assert not failed, "droverd exited with %s on SIGTERM" % rc

    def setUp(self):
        self.assertTrue(self.d.alive(), "droverd died:\n" + self.d.log()[-5000:])

    def tearDown(self):
        self.assertTrue(self.d.alive(), "droverd died:\n" + self.d.log()[-5000:])

    # helpers
    def error(self, r, status, code, *words):
        self.assertEqual(r.status, status, r)
        self.assertEqual(r.doc["error"]["code"], code, r)
        for w in words:
            self.assertIn(w, r.doc["error"]["message"], r)
        return r.doc["error"]

    def op_wait(self, op_id, states=("succeeded", "failed"), timeout=10):
        return wait_until(lambda: (lambda o: o if o["state"] in states else None)(
            self.api.ok("GET", "/v1/operations/" + op_id)), timeout,
            "operation %s to be %s" % (op_id, states))

    def vm_state(self, ref, state, timeout=10):
        return wait_until(lambda: (lambda v: v if v["state"] == state else None)(
            self.api.ok("GET", "/v1/vms/" + ref)), timeout, "vm %s to be %s" % (ref, state))

    def events(self, **q):
        qs = "&".join("%s=%s" % kv for kv in q.items())
        return self.api.ok("GET", "/v1/events?limit=500" + ("&" + qs if qs else ""))["items"]

    def event_kinds(self, **q):
        return [e["kind"] for e in self.events(**q)]

    def host(self, name):
        return self.api.ok("GET", "/v1/hosts/" + name)


# ---------------------------------------------------------------- the API

class Api(Base):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.agents.connect("alpha", cpus=8, mem_mib=16384, labels={"rack": "r1", "ssd": "yes"},
                           cpu_flags=["avx", "sse4_2"])
        cls.agents.connect("beta", cpus=4, mem_mib=8192, labels={"rack": "r2"},
                           cpu_flags=["sse4_2"])

    def test_health(self):
        r = self.api.call("GET", "/v1/health", token=None)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.doc["status"], "ok")
        self.error(self.api.get("/v1/health?verbose=1", token=None), 400, "bad-request",
                   "unknown query parameter 'verbose'")

    def test_tokens_and_roles(self):
        db = self.d.db
        r = self.api.get("/v1/hosts", token=None)
        self.error(r, 401, "unauthorized", "Authorization")
        self.error(self.api.get("/v1/hosts", token=None, headers={"Authorization": "Basic eDp5"}),
                   401, "unauthorized", "Bearer")
        self.error(self.api.get("/v1/hosts", token="drv_0123456789ab_" + "A" * 43), 401,
                   "unauthorized", "unknown token")
        forged = self.admin_token[:-1] + ("B" if self.admin_token[-1] != "B" else "C")
        self.error(self.api.get("/v1/hosts", token=forged), 401, "unauthorized", "unknown token")
        self.error(self.api.get("/v1/hosts", token="garbage"), 401, "unauthorized", "drv_")
        # A reader reads and may not write.
        self.assertEqual(self.reader.get("/v1/vms").status, 200)
        self.error(self.reader.post("/v1/placements", vm_def("r1")), 403, "forbidden", "reader")
        self.error(self.reader.delete("/v1/vms/none"), 403, "forbidden")
        self.error(self.reader.post("/v1/hosts/alpha/maintenance", {"enabled": True}), 403,
                   "forbidden")
        # Revoked: refused at once, while droverd runs.
        t = token(db, "admin", "doomed")
        self.assertEqual(Client(self.d.http_port, t).get("/v1/hosts").status, 200)
        tid = t[4:16]
        r = subprocess.run([ARGS.droverd, "token", "revoke", "--db", db, tid], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.error(Client(self.d.http_port, t).get("/v1/hosts"), 401, "unauthorized", "revoked",
                   tid)
        # Expired (the clock moved on: the database says it expired an hour ago).
        t2 = token(db, "reader", "short", ["--expires-days", "1"])
        with sqlite3.connect(db) as c:
            c.execute("UPDATE tokens SET expires_at = ? WHERE public_id = ?",
                      (int(time.time() * 1000) - 3600 * 1000, t2[4:16]))
        self.error(Client(self.d.http_port, t2).get("/v1/hosts"), 401, "unauthorized", "expired")
        # token list shows them, never a secret.
        r = subprocess.run([ARGS.droverd, "token", "list", "--db", db], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 0)
        self.assertIn(tid, r.stdout)
        self.assertRegex(r.stdout, tid + r"\s+admin\s+revoked")
        self.assertRegex(r.stdout, t2[4:16] + r"\s+reader\s+expired")
        self.assertNotIn(t[17:], r.stdout)
        # The database holds hashes only.
        with sqlite3.connect(db) as c:
            dump = "\n".join(c.iterdump())
        self.assertNotIn(t[17:], dump)
        self.assertNotIn(self.admin_token[17:], dump)

    def test_unknown_paths_and_methods(self):
        self.error(self.api.get("/v1/nope"), 404, "not-found", "/v1/nope")
        self.error(self.api.get("/v2/vms"), 404, "not-found")
        r = self.api.call("PUT", "/v1/vms", {"x": 1})
        self.error(r, 405, "method-not-allowed", "PUT")
        self.assertEqual(r.headers["Allow"], "GET, POST")
        self.assertEqual(self.api.call("DELETE", "/v1/hosts").headers["Allow"], "GET")
        self.error(self.api.call("PATCH", "/v1/vms/x"), 405, "method-not-allowed")
        self.error(self.api.get("/v1/vms/no-such-vm"), 404, "not-found", "no-such-vm")
        self.error(self.api.get("/v1/hosts/no-such-host"), 404, "not-found", "no-such-host")
        self.error(self.api.get("/v1/operations/nope"), 404, "not-found", "nope")
        self.error(self.api.delete("/v1/vms/no-such-vm"), 404, "not-found")
        self.error(self.api.post("/v1/vms/no-such-vm/actions/start"), 404, "not-found")
        self.error(self.api.post("/v1/vms/x/actions/explode"), 404, "not-found", "explode")
        self.error(self.api.post("/v1/hosts/no-such-host/maintenance", {"enabled": True}), 404,
                   "not-found")
        # Any byte may arrive percent-encoded; the answer stays JSON, quoting it harmlessly.
        self.error(self.api.get("/v1/vms/%FF%C3%28%0A"), 404, "not-found", "'??(?'")
        self.error(self.api.get("/v1/vms?%FF=1"), 400, "bad-request",
                   "unknown query parameter '?'")
        self.assertEqual(self.api.ok("GET", "/v1/vms?name=%E2%82%AC")["items"], [])
        self.error(self.api.get("/v1/hosts/caf%C3%A9"), 404, "not-found", "'caf\u00e9'")

    def test_bodies(self):
        r = self.api.call("POST", "/v1/vms", raw=b'{"name": "a",', content_type="application/json")
        self.error(r, 400, "bad-request", "not JSON", "line 1")
        self.error(self.api.call("POST", "/v1/vms", raw=b"[1,2]"), 400, "bad-request",
                   "must be a JSON object, not an array")
        self.error(self.api.call("POST", "/v1/vms", raw=b'{"a":1,"a":2}'), 400, "bad-request",
                   "duplicate")
        self.error(self.api.post("/v1/vms", vm_def("b1", cpus=2)), 400, "bad-request",
                   "unknown field 'cpus'")
        self.error(self.api.post("/v1/vms", vm_def("b1", vcpus="2")), 400, "bad-request",
                   "field 'vcpus' must be an integer, not a string")
        self.error(self.api.post("/v1/vms", vm_def("b1", boot={"kernel": 7})), 400, "bad-request",
                   "'boot.kernel'")
        self.error(self.api.post("/v1/vms", {"name": "b1"}), 400, "bad-request",
                   "missing field 'boot'")
        self.error(self.api.post("/v1/vms", vm_def("b1", placement={"zone": "a"})), 400,
                   "bad-request", "unknown field 'placement.zone'")
        self.error(self.api.call("POST", "/v1/vms"), 400, "bad-request", "needs a JSON body")
        self.error(self.api.call("POST", "/v1/vms", raw=b'{"name":"x"}', content_type="text/plain"),
                   415, "unsupported-media-type", "text/plain")
        self.error(self.api.call("POST", "/v1/vms", raw=b'{"name":"x"}', content_type=None), 415,
                   "unsupported-media-type")
        self.assertEqual(self.api.call("POST", "/v1/placements", raw=json.dumps(vm_def("ct")).encode(),
                                       content_type="Application/JSON; charset=utf-8").status, 200)
        self.error(self.api.call("GET", "/v1/vms", raw=b"{}"), 400, "bad-request", "takes no body")
        self.error(self.api.post("/v1/hosts/alpha/maintenance", {"enabled": "yes"}), 400,
                   "bad-request", "'enabled' must be a boolean")
        self.error(self.api.post("/v1/hosts/alpha/maintenance", {}), 400, "bad-request",
                   "missing field 'enabled'")
        self.error(self.api.post("/v1/hosts/alpha/maintenance", {"enabled": True, "x": 1}), 400,
                   "bad-request", "unknown field 'x'")

    def _raw_http(self, head, body=b"", read=True):
        s = socket.create_connection(("127.0.0.1", self.d.http_port), timeout=15)
        s.sendall(head + body)
        data = b""
        while read:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                hdr, _, rest = data.partition(b"\r\n\r\n")
                m = re.search(rb"Content-Length: (\d+)", hdr, re.I)
                if m and len(rest) >= int(m.group(1)):
                    break
        s.close()
        hdr, _, rest = data.partition(b"\r\n\r\n")
        status = int(hdr.split(b" ")[1])
        headers = {}
        for line in hdr.split(b"\r\n")[1:]:
            k, _, v = line.decode().partition(":")
            headers[k.strip()] = v.strip()
        return status, headers, rest

    def test_huge_bodies(self):
        auth = ("Authorization: Bearer %s\r\n" % self.admin_token).encode()
        # Declared too large: refused before the body is read.
        st, h, body = self._raw_http(b"POST /v1/vms HTTP/1.1\r\nHost: x\r\n" + auth +
                                     b"Content-Type: application/json\r\n"
                                     b"Content-Length: 5000000\r\n\r\n")
        self.assertEqual(st, 413)
        self.assertEqual(API.check("POST", "/v1/vms", st, h, body)["error"]["code"], "too-large")
        # Chunked, so only counting tells: 1 MiB + 1 byte.
        payload = b'{"name": "' + b"x" * (1 << 20) + b'"}'
        chunked = b"%x\r\n" % len(payload) + payload + b"\r\n0\r\n\r\n"
        st, h, body = self._raw_http(b"POST /v1/placements HTTP/1.1\r\nHost: x\r\n" + auth +
                                     b"Content-Type: application/json\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n", chunked)
        self.assertEqual(st, 413)
        self.assertIn(b"1 MiB", body)
        API.check("POST", "/v1/placements", st, h, body)
        # Just under the limit is read (and judged on its merits).
        ok = json.dumps(vm_def("big", description="d" * 4000)).encode()
        self.assertEqual(self.api.call("POST", "/v1/placements", raw=ok).status, 200)
        # Even a GET with a huge body is refused, on any path.
        st, h, body = self._raw_http(b"GET /v1/hosts HTTP/1.1\r\nHost: x\r\n" + auth +
                                     b"Content-Length: 2000000\r\n\r\n")
        self.assertEqual(st, 413)
        API.check("GET", "/v1/hosts", st, h, body)

    def test_definitions_refused_422(self):
        cases = [
            (vm_def("v0", vcpus=0), "'vcpus': '0' out of range 1..1024"),
            (vm_def("v1", memory="12X"), "'memory': '12X' is not a size"),
            (vm_def("1abc"), "'name': '1abc'"),
            (vm_def("c1", disks=[{"path": "/d", "cache": "fast"}]), "'disks[0].cache': 'fast'"),
            (vm_def("n1", nics=[{}]), "'nics'"),
            (vm_def("l1", labels={"bad key": "x"}), "label key 'bad key'"),
            (vm_def("g1", placement={"affinity_group": "-x"}), "'placement.affinity_group'"),
        ]
        for body, words in cases:
            self.error(self.api.post("/v1/vms", body), 422, "invalid-definition", words)
            self.error(self.api.post("/v1/placements", body), 422, "invalid-definition", words)
        self.assertEqual(self.api.ok("GET", "/v1/vms?name=v0")["items"], [])

    def test_placements(self):
        p = self.api.ok("POST", "/v1/placements", vm_def("p1", vcpus=2))
        self.assertIn(p["host_name"], ("alpha", "beta"))
        self.assertEqual(set(p["scores"]), {"alpha", "beta"})
        self.assertEqual(p["reasons"], {})
        self.assertIn("chose", p["summary"])
        # Only alpha has avx.
        p = self.api.ok("POST", "/v1/placements", vm_def("p2", placement={"cpu_flags": ["avx"]}))
        self.assertEqual(p["host_name"], "alpha")
        self.assertEqual(list(p["reasons"]), ["beta"])
        self.assertIn("avx", p["reasons"]["beta"][0])
        p = self.api.ok("POST", "/v1/placements", vm_def("p3", placement={"host": "beta"}))
        self.assertEqual(p["host_name"], "beta")
        p = self.api.ok("POST", "/v1/placements", vm_def("p4", placement={"host_labels": {"rack": "r2"}}))
        self.assertEqual(p["host_name"], "beta")
        # Impossible: more vCPUs than any host could ever give (8 cpus x 4).
        e = self.error(self.api.post("/v1/placements", vm_def("p5", vcpus=64)), 422,
                       "placement-impossible", "vcpus")
        self.assertEqual(set(e["details"]["hosts"]), {"alpha", "beta"})
        self.assertTrue(all(e["details"]["hosts"][h][0] for h in ("alpha", "beta")))
        e = self.error(self.api.post("/v1/placements", vm_def("p6", placement={"cpu_flags": ["sgx"]})),
                       422, "placement-impossible", "sgx")
        self.error(self.api.post("/v1/vms", vm_def("p6", vcpus=64)), 422, "placement-impossible")
        self.assertEqual(self.api.ok("GET", "/v1/vms?name=p6")["items"], [])
        # Not now: both hosts in maintenance.
        try:
            for h in ("alpha", "beta"):
                self.api.ok("POST", "/v1/hosts/%s/maintenance" % h, {"enabled": True})
            e = self.error(self.api.post("/v1/placements", vm_def("p7")), 409, "placement-not-now")
            self.assertIn("maintenance", e["details"]["hosts"]["alpha"][0])
            self.assertIn("maintenance", e["details"]["hosts"]["beta"][0])
            self.error(self.api.post("/v1/vms", vm_def("p7")), 409, "placement-not-now")
        finally:
            for h in ("alpha", "beta"):
                self.api.ok("POST", "/v1/hosts/%s/maintenance" % h, {"enabled": False})

    def test_maintenance(self):
        h = self.api.ok("POST", "/v1/hosts/beta/maintenance", {"enabled": True})
        self.assertTrue(h["maintenance"])
        self.assertTrue(self.host("id-beta")["maintenance"])
        e = self.error(self.api.post("/v1/placements", vm_def("m1", placement={"host": "beta"})),
                       409, "placement-not-now")
        self.assertIn("maintenance", e["details"]["hosts"]["beta"][0])
        # Asking twice changes nothing and logs one event.
        self.api.ok("POST", "/v1/hosts/beta/maintenance", {"enabled": True})
        self.assertFalse(self.api.ok("POST", "/v1/hosts/beta/maintenance", {"enabled": False})["maintenance"])
        msgs = [e["message"] for e in self.events(host="beta") if e["kind"] == "host-maintenance"]
        self.assertEqual(msgs[-2:], ["host beta enters maintenance", "host beta leaves maintenance"])

    def test_hosts(self):
        hosts = self.api.ok("GET", "/v1/hosts")["items"]
        by = {h["name"]: h for h in hosts}
        self.assertEqual(by["alpha"]["state"], "up")
        self.assertTrue(by["alpha"]["connected"])
        self.assertEqual(by["alpha"]["capacity"], {"vcpus": 32, "memory_mib": 16384})
        self.assertEqual(by["alpha"]["labels"], {"rack": "r1", "ssd": "yes"})
        self.assertEqual(by["alpha"]["inventory"]["cpu_flags"], ["avx", "sse4_2"])
        self.assertEqual(self.api.ok("GET", "/v1/hosts?state=down")["items"], [])
        self.assertEqual(len(self.api.ok("GET", "/v1/hosts?state=up")["items"]), len(hosts))
        self.error(self.api.get("/v1/hosts?state=sideways"), 400, "bad-request", "sideways")
        page = self.api.ok("GET", "/v1/hosts?limit=1")
        self.assertEqual(len(page["items"]), 1)
        rest = self.api.ok("GET", "/v1/hosts?limit=1&cursor=" + page["next_cursor"])
        self.assertNotEqual(page["items"][0]["id"], rest["items"][0]["id"])

    def _create(self, name, **kw):
        body = vm_def(name, **kw)
        body.setdefault("start", False)
        r = self.api.ok("POST", "/v1/vms", body, status=202)
        self.op_wait(r["operation"]["id"])
        return r

    def test_pagination(self):
        names = ["pg%02d" % i for i in range(7)]
        for n in names:
            self._create(n, labels={"suite": "pagination"})
        seen, cursor, pages = [], None, 0
        while True:
            q = "/v1/vms?label=suite=pagination&limit=3" + ("&cursor=" + cursor if cursor else "")
            page = self.api.ok("GET", q)
            seen += [v["name"] for v in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        self.assertEqual(seen, names)
        self.assertEqual(pages, 3)
        for bad in ("0", "501", "x", "-1", "1.5"):
            self.error(self.api.get("/v1/vms?limit=" + bad), 400, "bad-request", "limit")
        # Not base64url; "v:x"; "h:1" (a hosts cursor); "v:-1".
        for bad in ("garbage!", "djp4", "aDox", "djotMQ"):
            self.error(self.api.get("/v1/vms?cursor=" + bad), 400, "bad-request", "cursor")
        # A cursor from another list is refused too.
        page = self.api.ok("GET", "/v1/events?limit=1")
        self.error(self.api.get("/v1/vms?cursor=" + page["next_cursor"]), 400, "bad-request")
        self.assertEqual(len(self.api.ok("GET", "/v1/events?limit=500")["items"]) > 1, True)

    def test_filters(self):
        self._create("fa", labels={"team": "a", "tier": "web"})
        self._create("fb", labels={"team": "a", "tier": "db"}, placement={"host": "beta"})
        names = lambda q: [v["name"] for v in self.api.ok("GET", "/v1/vms?" + q)["items"]]
        self.assertEqual(names("label=team=a&label=tier=db"), ["fb"])
        self.assertEqual(set(names("label=team=a")), {"fa", "fb"})
        self.assertEqual(names("name=fa"), ["fa"])
        self.assertIn("fb", names("host=beta"))
        self.assertIn("fb", names("host=id-beta"))
        self.assertEqual(names("host=nowhere"), [])
        self.assertIn("fa", names("state=defined"))
        self.assertEqual(names("state=running&name=fa"), [])
        self.error(self.api.get("/v1/vms?state=asleep"), 400, "bad-request", "asleep")
        self.error(self.api.get("/v1/vms?label=team"), 400, "bad-request", "KEY=VALUE")
        self.error(self.api.get("/v1/vms?colour=red"), 400, "bad-request", "colour")
        self.error(self.api.get("/v1/vms?name=a&name=b"), 400, "bad-request", "twice")
        vm = self.api.ok("GET", "/v1/vms/fb")
        self.assertEqual(vm["host_name"], "beta")
        self.assertEqual(vm["definition"]["labels"], {"team": "a", "tier": "db"})
        self.assertNotIn("start", vm["definition"])
        self.assertEqual(self.api.ok("GET", "/v1/vms/" + vm["id"])["name"], "fb")
        self.error(self.api.post("/v1/vms", vm_def("fa")), 409, "name-taken", "fa")

    def test_idempotency(self):
        body = vm_def("idem1", start=False)
        key = {"Idempotency-Key": "create-idem1"}
        r1 = self.api.call("POST", "/v1/vms", body, headers=key)
        self.assertEqual(r1.status, 202)
        # Same key, same body (other spacing and key order): the first answer again.
        again = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
        r2 = self.api.call("POST", "/v1/vms", raw=again, headers=key)
        self.assertEqual(r2.status, 202)
        self.assertEqual(r2.doc, r1.doc)
        self.assertEqual(r2.headers.get("Idempotent-Replayed"), "true")
        self.assertEqual(len(self.api.ok("GET", "/v1/vms?name=idem1")["items"]), 1)
        # Same key, other body: refused.
        self.error(self.api.call("POST", "/v1/vms", vm_def("idem2"), headers=key), 422,
                   "idempotency-mismatch", "create-idem1")
        # Keys belong to a token: another token's same key is another request.
        other = Client(self.d.http_port, token(self.d.db, "admin", "other"))
        self.assertEqual(other.call("POST", "/v1/vms", vm_def("idem3", start=False),
                                    headers=key).status, 202)
        # Refusals are not kept: retried with its key, the request may succeed.
        k2 = {"Idempotency-Key": "maint-1"}
        self.error(self.api.call("POST", "/v1/hosts/nohost/maintenance", {"enabled": True},
                                 headers=k2), 404, "not-found")
        self.assertEqual(self.api.call("POST", "/v1/hosts/alpha/maintenance", {"enabled": False},
                                       headers=k2).status, 200)
        self.error(self.api.call("POST", "/v1/vms", body, headers={"Idempotency-Key": "bad key!"}),
                   400, "bad-request", "Idempotency-Key")
        self.error(self.api.call("POST", "/v1/vms", body, headers={"Idempotency-Key": "k" * 129}),
                   400, "bad-request", "Idempotency-Key")

    def test_operations_and_events(self):
        r = self._create("ev1")
        vm_id = r["vm"]["id"]
        ops = self.api.ok("GET", "/v1/operations?vm=ev1")["items"]
        self.assertEqual([o["kind"] for o in ops], ["create"])
        self.assertEqual(ops[0]["state"], "succeeded")
        self.assertEqual(ops[0]["progress"], 100)
        self.assertIsNone(ops[0]["error"])
        self.assertIn(ops[0]["id"], [o["id"] for o in self.api.ok("GET", "/v1/operations?state=succeeded&limit=500")["items"]])
        self.error(self.api.get("/v1/operations?state=done"), 400, "bad-request", "done")
        evs = self.events(vm="ev1")
        self.assertEqual([e["kind"] for e in evs], ["vm-created", "vm-defined"])
        later = self.api.ok("GET", "/v1/events?since=%d" % evs[0]["id"])["items"]
        self.assertTrue(all(e["id"] > evs[0]["id"] for e in later))
        self.assertEqual(self.api.ok("GET", "/v1/events?vm=" + vm_id)["items"][0]["id"], evs[0]["id"])
        self.error(self.api.get("/v1/events?since=yesterday"), 400, "bad-request", "since")
        # Delete: 202, then gone; its operations and events stay.
        d = self.api.ok("DELETE", "/v1/vms/ev1", status=202)
        self.assertEqual(d["operation"]["kind"], "delete")
        self.assertEqual(self.op_wait(d["operation"]["id"])["state"], "succeeded")
        self.error(self.api.get("/v1/vms/ev1"), 404, "not-found")
        self.assertEqual(self.event_kinds(vm=vm_id)[-1], "vm-deleted")
        self.assertEqual([o["kind"] for o in self.api.ok("GET", "/v1/operations?vm=" + vm_id)["items"]],
                         ["create", "delete"])

    def test_zz_every_documented_path(self):
        # Runs last (alphabetical): what the group did covers the contract.
        self.api.ok("GET", "/v1/health", token=None)
        self.api.ok("GET", "/v1/operations")
        missing = API.documented() - API.seen
        self.assertEqual(missing, set(), "documented but never exercised")
        self.assertGreater(API.checked, 100)


# ---------------------------------------------------------------- the agents

class Agents_(Base):
    """Hosts, heartbeats and the operation engine, with fake agents."""
    extra = ("--cpu-ratio", "1", "--mem-ratio", "1")

    def test_registration_and_inventory(self):
        w = self.agents.connect("reg1", cpus=16, mem_mib=65536, reserved_cpus=2,
                                reserved_mem_mib=1024, labels={"zone": "z1"},
                                cpu_flags=["sse4_2", "avx", "avx"], migration_address="10.9.9.9:7100")
        self.assertEqual(w["interval_ms"], HEARTBEAT_TIMEOUT_S * 1000 // 3)
        self.assertEqual(w["host_id"], "id-reg1")
        h = self.host("reg1")
        self.assertEqual(h["id"], "id-reg1")
        self.assertEqual(h["state"], "up")
        self.assertTrue(h["connected"])
        self.assertEqual(h["address"], "127.0.0.1")
        self.assertEqual(h["migration_address"], "10.9.9.9:7100")
        self.assertEqual(h["agent_version"], "fake-0.1")
        self.assertEqual(h["labels"], {"zone": "z1"})
        self.assertEqual(h["inventory"]["cpus"], 16)
        self.assertEqual(h["inventory"]["cpu_flags"], ["avx", "sse4_2"])   # sorted, unique
        self.assertEqual(h["inventory"]["kernel"], "6.1.0-fake")
        self.assertEqual(h["capacity"], {"vcpus": 14, "memory_mib": 64512})
        self.assertEqual(h["allocated"], {"vcpus": 0, "memory_mib": 0, "vms": 0})
        first = h["last_heartbeat"]
        wait_until(lambda: self.host("reg1")["last_heartbeat"] != first, 5, "a heartbeat")
        kinds = self.event_kinds(host="id-reg1")
        self.assertEqual(kinds[:2], ["host-registered", "host-up"])

    def test_bad_hellos(self):
        self.agents.connect("bh1", wait=False, host_name="-bad")
        e = self.agents.expect(ev="error", agent="bh1")
        self.assertEqual(e["code"], "bad-hello")
        self.assertIn("host_name '-bad'", e["message"])
        self.agents.expect(ev="closed", agent="bh1")
        self.agents.connect("bh2", wait=False, host_id="bad id with spaces")
        self.assertEqual(self.agents.expect(ev="error", agent="bh2")["code"], "bad-hello")
        self.agents.connect("bh3", wait=False, labels={"bad key": "x"})
        self.assertIn("label key", self.agents.expect(ev="error", agent="bh3")["message"])
        self.agents.connect("owner1", host_name="taken")
        self.agents.connect("thief", wait=False, host_id="id-other", host_name="taken")
        e = self.agents.expect(ev="error", agent="thief")
        self.assertEqual(e["code"], "host-name-taken")
        self.agents.expect(ev="closed", agent="thief")
        self.error(self.api.get("/v1/hosts/-bad"), 404, "not-found")

    def test_not_hello_first(self):
        self.agents.connect("nh", wait=False, first="heartbeat")
        e = self.agents.expect(ev="error", agent="nh")
        self.assertEqual(e["code"], "not-hello")
        self.assertIn("Heartbeat", e["message"])
        self.agents.expect(ev="closed", agent="nh")

    def _frames(self, payloads, expect_close=True):
        s = socket.create_connection(("127.0.0.1", self.d.agent_port), timeout=5)
        for p in payloads:
            s.sendall(p)
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            if expect_close:
                raise AssertionError("droverd kept a connection that sent garbage")
        s.close()
        return data

    def test_garbage_on_agent_port(self):
        # Random bytes: a frame that is no Envelope.
        out = self._frames([struct.pack(">I", 12) + os.urandom(12)])
        self.assertIn(b"bad-frame", out)
        # A length beyond the limit.
        self.assertIn(b"frame-too-large", self._frames([struct.pack(">I", 0x7fffffff)]))
        self.assertIn(b"frame-too-large", self._frames([struct.pack(">I", 0)]))
        # Half a frame, then gone; and plain text.
        s = socket.create_connection(("127.0.0.1", self.d.agent_port))
        s.sendall(struct.pack(">I", 100) + b"abc")
        s.close()
        self._frames([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"])
        self.assertTrue(self.d.alive())
        self.api.ok("GET", "/v1/health", token=None)
        self.agents.connect("after-garbage")

    def test_vm_lifecycle(self):
        self.agents.connect("life", cpus=8, mem_mib=8192)
        r = self.api.ok("POST", "/v1/vms", vm_def("web1", vcpus=2, placement={"host": "life"},
                                                  labels={"app": "web"}), status=202)
        self.assertEqual(r["vm"]["state"], "scheduling")
        self.assertEqual(r["vm"]["host_name"], "life")
        self.assertEqual(r["operation"]["kind"], "create")
        cmd = self.agents.expect(ev="command", agent="life", kind="define")
        d = json.loads(cmd["definition"])
        self.assertEqual(d["id"], r["vm"]["id"])
        self.assertEqual(d["name"], "web1")
        self.assertEqual(d["vcpus"], 2)
        self.assertNotIn("start", d)
        self.agents.expect(ev="command", agent="life", kind="start")
        op = self.op_wait(r["operation"]["id"])
        self.assertEqual(op["state"], "succeeded", op)
        vm = self.vm_state("web1", "running")
        self.assertEqual(vm["pid"], 1000)
        self.assertEqual(self.host("life")["allocated"], {"vcpus": 2, "memory_mib": 256, "vms": 1})
        # stop (with its timeout), start, reboot, pause, resume.
        a = self.api.ok("POST", "/v1/vms/web1/actions/stop", {"timeout_s": 5}, status=202)
        c = self.agents.expect(ev="command", agent="life", kind="stop")
        self.assertEqual((c["timeout_ms"], c["force"]), (5000, False))
        self.op_wait(a["operation"]["id"])
        vm = self.vm_state("web1", "stopped")
        self.assertIsNone(vm["pid"])
        self.assertEqual(vm["exit_reason"], "host-qmp-quit")
        self.error(self.api.post("/v1/vms/web1/actions/stop"), 409, "wrong-state", "stopped")
        self.error(self.api.post("/v1/vms/web1/actions/stop", {"timeout_s": 9999}), 422,
                   "unprocessable", "9999")
        self.error(self.api.post("/v1/vms/web1/actions/start", {"force": True}), 400,
                   "bad-request", "only stop")
        for action, state in (("start", "running"), ("reboot", "running"), ("pause", "paused"),
                              ("resume", "running")):
            a = self.api.ok("POST", "/v1/vms/web1/actions/" + action, {}, status=202)
            self.agents.expect(ev="command", agent="life", kind=action)
            self.assertEqual(self.op_wait(a["operation"]["id"])["state"], "succeeded")
            self.vm_state("web1", state)
        self.error(self.api.post("/v1/vms/web1/actions/resume"), 409, "wrong-state", "running")
        a = self.api.ok("POST", "/v1/vms/web1/actions/stop", {"force": True}, status=202)
        self.assertTrue(self.agents.expect(ev="command", agent="life", kind="stop")["force"])
        self.op_wait(a["operation"]["id"])
        kinds = self.event_kinds(vm="web1")
        for k in ("vm-created", "vm-started", "vm-stopped", "vm-rebooted", "vm-paused", "vm-resumed"):
            self.assertIn(k, kinds)
        # delete: a forced stop (no waiting on the guest), undefine, gone;
        # resources freed.
        d = self.api.ok("DELETE", "/v1/vms/web1", status=202)
        self.assertTrue(self.agents.expect(ev="command", agent="life", kind="stop")["force"])
        self.agents.expect(ev="command", agent="life", kind="undefine")
        self.assertEqual(self.op_wait(d["operation"]["id"])["state"], "succeeded")
        self.error(self.api.get("/v1/vms/web1"), 404, "not-found")
        self.assertEqual(self.host("life")["allocated"]["vms"], 0)

    def test_busy_and_supersede(self):
        self.agents.connect("slow", auto=False)
        r = self.api.ok("POST", "/v1/vms", vm_def("slow1", placement={"host": "slow"}), status=202)
        define = self.agents.expect(ev="command", agent="slow", kind="define")
        op = self.api.ok("GET", "/v1/operations/" + r["operation"]["id"])
        self.assertEqual(op["state"], "running")
        self.assertIn("waiting for host slow's answer", op["message"])
        self.error(self.api.post("/v1/vms/slow1/actions/start"), 409, "vm-busy",
                   r["operation"]["id"])
        # delete supersedes the create in flight; its late answer is ignored.
        d = self.api.ok("DELETE", "/v1/vms/slow1", status=202)
        old = self.op_wait(r["operation"]["id"])
        self.assertEqual(old["error"]["code"], "superseded")
        self.agents.send(op="answer", agent="slow", seq=define["seq"], ok=True,
                         vm_id=r["vm"]["id"], state="defined")
        stop = self.agents.expect(ev="command", agent="slow", kind="stop")
        self.agents.send(op="answer", agent="slow", seq=stop["seq"], ok=False,
                         error_code="not-found", message="no such VM")
        und = self.agents.expect(ev="command", agent="slow", kind="undefine")
        self.agents.send(op="answer", agent="slow", seq=und["seq"], ok=True)
        self.assertEqual(self.op_wait(d["operation"]["id"])["state"], "succeeded")
        self.error(self.api.get("/v1/vms/slow1"), 404, "not-found")

    def test_command_errors(self):
        self.agents.connect("picky", auto=False)
        r = self.api.ok("POST", "/v1/vms", vm_def("bad1", placement={"host": "picky"}), status=202)
        c = self.agents.expect(ev="command", agent="picky", kind="define")
        self.agents.send(op="answer", agent="picky", seq=c["seq"], ok=False,
                         error_code="bad-definition", message="kernel /srv/guest.elf: no such file")
        op = self.op_wait(r["operation"]["id"])
        self.assertEqual(op["state"], "failed")
        self.assertEqual(op["error"], {"code": "bad-definition",
                                       "message": "kernel /srv/guest.elf: no such file"})
        self.vm_state("bad1", "error")
        self.assertIn("operation-failed", self.event_kinds(vm="bad1"))
        # An Error answering a command fails it too.
        self.agents.send(op="auto", agent="picky", on=True)
        self.op_wait(self.api.ok("DELETE", "/v1/vms/bad1", status=202)["operation"]["id"])
        self.agents.send(op="auto", agent="picky", on=False)
        r = self.api.ok("POST", "/v1/vms", vm_def("bad2", placement={"host": "picky"}), status=202)
        c = self.agents.expect(ev="command", agent="picky", kind="define")
        self.agents.send(op="error", agent="picky", reply_to=c["seq"], code="vmm-failed",
                         message="drover-vmm exited with status 1")
        op = self.op_wait(r["operation"]["id"])
        self.assertEqual(op["error"]["code"], "vmm-failed")

    def test_waits_for_its_agent(self):
        self.agents.connect("away")
        r = self.api.ok("POST", "/v1/vms", vm_def("aw1", placement={"host": "away"}), status=202)
        self.agents.expect(ev="command", agent="away", kind="define")
        self.agents.expect(ev="command", agent="away", kind="start")
        self.op_wait(r["operation"]["id"])
        self.vm_state("aw1", "running")
        self.agents.send(op="close", agent="away")
        wait_until(lambda: not self.host("away")["connected"], 5, "the agent to be gone")
        a = self.api.ok("POST", "/v1/vms/aw1/actions/stop", status=202)
        op = self.api.ok("GET", "/v1/operations/" + a["operation"]["id"])
        self.assertEqual(op["state"], "pending")
        self.assertIn("waiting for host away's agent to connect", op["message"])
        self.agents.connect("away")
        self.agents.expect(ev="command", agent="away", kind="stop")
        self.assertEqual(self.op_wait(a["operation"]["id"])["state"], "succeeded")
        self.vm_state("aw1", "stopped")
        # A command lost with its connection is sent again on reconnect.
        self.agents.send(op="auto", agent="away", on=False)
        a = self.api.ok("POST", "/v1/vms/aw1/actions/start", status=202)
        self.agents.expect(ev="command", agent="away", kind="start")
        self.agents.send(op="close", agent="away")
        op = wait_until(lambda: (lambda o: o if o["state"] == "pending" else None)(
            self.api.ok("GET", "/v1/operations/" + a["operation"]["id"])), 5, "pending again")
        self.assertIn("disconnected", op["message"])
        self.agents.connect("away", auto=False)
        c = self.agents.expect(ev="command", agent="away", kind="start")
        self.agents.send(op="answer", agent="away", seq=c["seq"], ok=True, vm_id=op["vm"],
                         state="running", pid=4242)
        self.op_wait(a["operation"]["id"])
        self.assertEqual(self.vm_state("aw1", "running")["pid"], 4242)

    def test_reported_states(self):
        self.agents.connect("rep")
        r = self.api.ok("POST", "/v1/vms", vm_def("rep1", placement={"host": "rep"}), status=202)
        self.op_wait(r["operation"]["id"])
        vm_id = r["vm"]["id"]
        self.vm_state("rep1", "running")
        self.agents.send(op="vm_event", agent="rep", vm_id=vm_id, state="stopped", event="stopped",
                         exit_status=0, exit_reason="guest-shutdown")
        vm = self.vm_state("rep1", "stopped")
        self.assertEqual((vm["exit_status"], vm["exit_reason"]), (0, "guest-shutdown"))
        ev = [e for e in self.events(vm=vm_id) if e["kind"] == "vm-stopped"][-1]
        self.assertIn("guest-shutdown", ev["message"])
        self.agents.send(op="vm_event", agent="rep", vm_id=vm_id, state="running", pid=77)
        self.assertEqual(self.vm_state("rep1", "running")["pid"], 77)
        self.agents.send(op="vm_event", agent="rep", vm_id=vm_id, state="crashed",
                         exit_status=2, exit_reason="guest-crash", detail="triple fault")
        vm = self.vm_state("rep1", "crashed")
        self.assertEqual((vm["exit_status"], vm["exit_reason"], vm["pid"]), (2, "guest-crash", None))
        ev = [e for e in self.events(vm=vm_id) if e["kind"] == "vm-crashed"][-1]
        self.assertIn("triple fault", ev["message"])
        # The agent's transitional states are the API's too.
        self.agents.send(op="vm_event", agent="rep", vm_id=vm_id, state="starting", pid=78)
        self.assertEqual(self.vm_state("rep1", "starting")["pid"], 78)
        self.agents.send(op="vm_event", agent="rep", vm_id=vm_id, state="crashed",
                         exit_status=2, exit_reason="guest-crash", detail="triple fault")
        self.vm_state("rep1", "crashed")
        # Heartbeats repeat the state; nothing new is recorded.
        n = len(self.events(vm=vm_id))
        time.sleep(1.5)
        self.assertEqual(len(self.events(vm=vm_id)), n)
        # A state word droverd does not know is ignored, and so is a VM it does not know.
        self.agents.send(op="vm_event", agent="rep", vm_id=vm_id, state="exploded")
        self.agents.send(op="vm_event", agent="rep", vm_id="not-a-vm", state="running")
        self.agents.send(op="sync", id=1)
        self.agents.expect(ev="sync", id=1)
        time.sleep(0.3)
        self.assertEqual(self.api.ok("GET", "/v1/vms/rep1")["state"], "crashed")

    def test_vm_lost_by_its_host(self):
        self.agents.connect("amnesiac")
        r = self.api.ok("POST", "/v1/vms", vm_def("lost1", placement={"host": "amnesiac"}),
                        status=202)
        self.op_wait(r["operation"]["id"])
        self.vm_state("lost1", "running")
        self.agents.send(op="close", agent="amnesiac")
        wait_until(lambda: not self.host("amnesiac")["connected"], 5, "the agent to be gone")
        # Back with an empty VM table (a host that lost its run directory).
        self.agents.connect("amnesiac", vms=[])
        vm = self.vm_state("lost1", "unknown")
        self.assertIsNone(vm["pid"])
        ev = [e for e in self.events(vm=r["vm"]["id"]) if e["kind"] == "vm-lost"]
        self.assertEqual(len(ev), 1)
        # stop is allowed from unknown; the agent says not-found: it fails, state kept.
        a = self.api.ok("POST", "/v1/vms/lost1/actions/stop", status=202)
        op = self.op_wait(a["operation"]["id"])
        self.assertEqual(op["error"]["code"], "not-found")
        self.assertEqual(self.api.ok("GET", "/v1/vms/lost1")["state"], "unknown")
        # A report settles it again.
        self.agents.send(op="vm_event", agent="amnesiac", vm_id=r["vm"]["id"], state="stopped",
                         exit_reason="host-signal")
        self.vm_state("lost1", "stopped")
        d = self.api.ok("DELETE", "/v1/vms/lost1", status=202)
        self.assertEqual(self.op_wait(d["operation"]["id"])["state"], "succeeded")

    def test_host_down_and_up(self):
        self.agents.connect("flaky")
        self.agents.send(op="heartbeats", agent="flaky", on=False)
        t0 = time.time()
        wait_until(lambda: self.host("flaky")["state"] == "down", HEARTBEAT_TIMEOUT_S + 4, "host-down")
        self.assertGreaterEqual(time.time() - t0, HEARTBEAT_TIMEOUT_S - 1.5)
        h = self.host("flaky")
        self.assertTrue(h["connected"])
        ev = [e for e in self.events(host="id-flaky") if e["kind"] == "host-down"]
        self.assertEqual(len(ev), 1)
        self.assertIn("no heartbeat", ev[0]["message"])
        e = self.error(self.api.post("/v1/placements", vm_def("fl1", placement={"host": "flaky"})),
                       409, "placement-not-now")
        self.assertIn("flaky", e["details"]["hosts"])
        self.agents.send(op="heartbeats", agent="flaky", on=True)
        wait_until(lambda: self.host("flaky")["state"] == "up", 5, "host-up")
        self.assertEqual(self.event_kinds(host="id-flaky")[-1], "host-up")

    def test_agent_replaced(self):
        self.agents.connect("rp-a", host_id="id-rp", host_name="rp")
        self.agents.connect("rp-b", host_id="id-rp", host_name="rp")
        self.agents.expect(ev="closed", agent="rp-a")
        self.assertIn("agent-replaced", self.event_kinds(host="id-rp"))
        self.assertTrue(self.host("rp")["connected"])

    def test_two_hosts_capacity_and_anti_affinity(self):
        # cpu-ratio 1: each host gives exactly its 2 CPUs.
        for n in ("cap-a", "cap-b"):
            self.agents.connect(n, cpus=2, mem_mib=4096, labels={"pool": "cap"})
        made = []
        for i in range(2):
            r = self.api.ok("POST", "/v1/vms", vm_def("aa%d" % i, placement={
                "host_labels": {"pool": "cap"}, "anti_affinity_group": "ha"}), status=202)
            made.append(r["vm"]["host_name"])
            self.op_wait(r["operation"]["id"])
        self.assertEqual(sorted(made), ["cap-a", "cap-b"])
        e = self.error(self.api.post("/v1/vms", vm_def("aa2", placement={
            "host_labels": {"pool": "cap"}, "anti_affinity_group": "ha"})), 409, "placement-not-now")
        for h in ("cap-a", "cap-b"):
            self.assertIn("anti", e["details"]["hosts"][h][0])
        # Capacity: one more vCPU fits on each, two do not.
        r = self.api.ok("POST", "/v1/vms", vm_def("cap1", placement={"host_labels": {"pool": "cap"}}),
                        status=202)
        self.op_wait(r["operation"]["id"])
        e = self.error(self.api.post("/v1/placements", vm_def("cap2", vcpus=2, placement={
            "host_labels": {"pool": "cap"}})), 409, "placement-not-now")
        self.assertIn("vcpus", e["details"]["hosts"]["cap-a"][0])
        # Affinity: with a group member on one host, the next goes there too.
        for n in ("aff-a", "aff-b"):
            self.agents.connect(n, cpus=4, mem_mib=4096, labels={"pool": "aff"})
        r = self.api.ok("POST", "/v1/vms", vm_def("af1", placement={
            "host_labels": {"pool": "aff"}, "affinity_group": "pair"}), status=202)
        self.op_wait(r["operation"]["id"])
        there = r["vm"]["host_name"]
        other = "aff-b" if there == "aff-a" else "aff-a"
        for i in range(2):
            p = self.api.ok("POST", "/v1/placements", vm_def("af2", placement={
                "host_labels": {"pool": "aff"}, "affinity_group": "pair"}))
            self.assertEqual(p["host_name"], there)
            self.assertIn("affinity", p["reasons"][other][0])

    def test_operation_timeout(self):
        tmp = tempfile.mkdtemp(prefix="drover-ctl-test-")
        d = Droverd(tmp, ("--op-timeout-s", "2"))
        tok = token(d.db, "admin")
        d.start()
        ag = Agents("127.0.0.1:%d" % d.agent_port)
        try:
            api = Client(d.http_port, tok)
            ag.connect("mute", auto=False)
            r = api.ok("POST", "/v1/vms", vm_def("mute1"), status=202)
            ag.expect(ev="command", agent="mute", kind="define")
            op = wait_until(lambda: (lambda o: o if o["state"] == "failed" else None)(
                api.ok("GET", "/v1/operations/" + r["operation"]["id"])), 6, "the timeout")
            self.assertEqual(op["error"]["code"], "timeout")
            self.assertIn("did not answer", op["error"]["message"])
            self.assertEqual(api.ok("GET", "/v1/vms/mute1")["state"], "error")
        finally:
            ag.close()
            self.assertEqual(d.stop(), 0)
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- restart

class Restart(unittest.TestCase):
    def test_sigkill_with_an_operation_in_flight(self):
        tmp = tempfile.mkdtemp(prefix="drover-ctl-test-")
        try:
            self._run(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _run(self, tmp):
        http_port, agent_port = free_port(), free_port()
        d = Droverd(tmp, http_port=http_port, agent_port=agent_port)
        tok = token(d.db, "admin")
        d.start()
        ag = Agents("127.0.0.1:%d" % agent_port)
        api = Client(http_port, tok)
        try:
            ag.connect("h1", auto=True)
            done = api.ok("POST", "/v1/vms", vm_def("keep1", placement={"host": "h1"}), status=202)
            wait_until(lambda: api.ok("GET", "/v1/operations/" + done["operation"]["id"])["state"]
                       == "succeeded", 10, "keep1")
            ag.send(op="auto", agent="h1", on=False)
            r = api.ok("POST", "/v1/vms", vm_def("inflight", placement={"host": "h1"}), status=202)
            ag.expect(ev="command", agent="h1", kind="define")
            stop = api.ok("POST", "/v1/vms/keep1/actions/stop", status=202)
            ag.expect(ev="command", agent="h1", kind="stop")
            before_events = api.ok("GET", "/v1/events?limit=500")["items"]
            # Killed with both operations in flight, answers never sent.
            d.stop(signal.SIGKILL)
            ag.expect(ev="closed", agent="h1")
            d2 = Droverd(tmp, http_port=http_port, agent_port=agent_port).start()
            self.assertIn("resumes at its define step", d2.log())
            self.assertIn("resumes at its stop step", d2.log())
            op = api.ok("GET", "/v1/operations/" + r["operation"]["id"])
            self.assertIn(op["state"], ("pending", "running"))
            self.assertIn("waiting for host h1's agent", op["message"])
            self.assertEqual(api.ok("GET", "/v1/vms/inflight")["state"], "scheduling")
            self.assertEqual(api.ok("GET", "/v1/vms/keep1")["state"], "stopping")
            after = api.ok("GET", "/v1/events?limit=500")["items"]
            self.assertEqual(after[:len(before_events)], before_events)
            self.assertEqual(api.ok("GET", "/v1/hosts/h1")["state"], "up")   # grace
            # The agent comes back (as real ones do); the commands come again.
            ag.send(op="auto", agent="h1", on=True)
            ag.connect("h1")
            self.assertEqual(ag.expect(ev="command", agent="h1", kind="define")["vm_id"], r["vm"]["id"])
            ag.expect(ev="command", agent="h1", kind="start")
            ag.expect(ev="command", agent="h1", kind="stop")
            for o in (r, stop):
                got = wait_until(lambda: (lambda x: x if x["state"] in ("succeeded", "failed")
                                          else None)(api.ok("GET", "/v1/operations/" +
                                                            o["operation"]["id"])), 10, "resume")
                self.assertEqual(got["state"], "succeeded", got)
            self.assertEqual(api.ok("GET", "/v1/vms/inflight")["state"], "running")
            self.assertEqual(api.ok("GET", "/v1/vms/keep1")["state"], "stopped")
            self.assertEqual(d2.stop(), 0)
            # A database from a newer droverd is refused, untouched.
            with sqlite3.connect(d.db) as c:
                c.execute("PRAGMA user_version = 42")
            p = subprocess.run(Droverd(tmp).argv(), capture_output=True, text=True, timeout=10)
            self.assertEqual(p.returncode, 1)
            self.assertIn("schema version 42 was written by a newer droverd", p.stderr)
        finally:
            ag.close()
            d.stop()


# ---------------------------------------------------------------- the command line

class Cli(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="drover-ctl-test-")
        self.db = os.path.join(self.tmp, "d.db")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_d(self, *args, timeout=10):
        return subprocess.run([ARGS.droverd] + list(args), capture_output=True, text=True,
                              timeout=timeout)

    def test_bad_command_lines(self):
        cases = [
            ((), 2, "which command?"),
            (("frobnicate",), 2, "unknown command 'frobnicate'"),
            (("serve",), 2, "--db FILE is required"),
            (("serve", "--db", self.db, "--colour", "red"), 2, "unknown option '--colour'"),
            (("serve", "--db", self.db, "--heartbeat-timeout-s", "0"), 2,
             "--heartbeat-timeout-s: '0' is not a whole number of seconds from 1 to 3600"),
            (("serve", "--db", self.db, "--cpu-ratio", "lots"), 2, "--cpu-ratio: 'lots' is not a ratio"),
            (("serve", "--db", self.db, "--weigher", "random"), 2, "'random' is not one of spread, pack"),
            (("serve", "--db", self.db, "--listen", "nonsense"), 2, "'nonsense' is not HOST:PORT"),
            (("serve", "--db", self.db, "--log-level"), 2, "--log-level needs a value"),
            (("serve", "--db", self.db, "stray"), 2, "unexpected argument 'stray'"),
            (("token",), 2, "create, list or revoke?"),
            (("token", "create", "--db", self.db), 2, "--role '': admin or reader"),
            (("token", "create", "--db", self.db, "--role", "root"), 2, "--role 'root'"),
            (("token", "create", "--db", self.db, "--role", "admin", "--expires-days", "0"), 2,
             "--expires-days '0'"),
            (("token", "revoke", "--db", self.db), 2, "revoke which token?"),
            (("token", "revoke", "--db", self.db, "ffffffffffff"), 1, "no token has the ID 'ffffffffffff'"),
            (("token", "list"), 2, "--db FILE is required"),
        ]
        for args, rc, words in cases:
            p = self.run_d(*args)
            self.assertEqual(p.returncode, rc, (args, p.stderr))
            self.assertIn(words, p.stderr, args)
        p = self.run_d("--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("droverd serve --db FILE", p.stdout)
        p = self.run_d("serve", "--db", "/nonexistent/dir/d.db", "--listen", "127.0.0.1:0",
                       "--agent-listen", "127.0.0.1:0")
        self.assertEqual(p.returncode, 1)
        self.assertIn("/nonexistent/dir/d.db", p.stderr)

    def test_config_file(self):
        cfg = os.path.join(self.tmp, "droverd.json")

        def write(doc):
            with open(cfg, "w") as f:
                f.write(doc if isinstance(doc, str) else json.dumps(doc))

        for doc, words in [
            ({"db": self.db, "colour": "red"}, "unknown key 'colour'"),
            ({"db": self.db, "heartbeat-timeout-s": "5"}, "'heartbeat-timeout-s' must be an integer"),
            ({"db": self.db, "cpu-ratio": 0}, "cpu-ratio: '0' is not a ratio"),
            ("{\"db\": ", "line 1"),
            ("[]", "must hold one JSON object"),
        ]:
            write(doc)
            p = self.run_d("serve", "--config", cfg)
            self.assertEqual(p.returncode, 2, (doc, p.stderr))
            self.assertIn(cfg, p.stderr)
            self.assertIn(words, p.stderr, doc)
        p = self.run_d("serve", "--config", os.path.join(self.tmp, "missing.json"))
        self.assertEqual(p.returncode, 2)
        self.assertIn("missing.json", p.stderr)
        # A good file; the command line wins over it.
        port = free_port()
        write({"db": self.db, "listen": "127.0.0.1:1", "agent-listen": "127.0.0.1:0",
               "heartbeat-timeout-s": 9, "cpu-ratio": 2.5, "weigher": "pack", "log-level": "info",
               "op-timeout-s": 30, "mem-ratio": 1})
        d = Droverd(self.tmp, db=self.db)
        d.argv = lambda: [ARGS.droverd, "serve", "--config", cfg, "--listen", "127.0.0.1:%d" % port]
        d.start()
        try:
            self.assertEqual(d.http_port, port)
            tok = token(self.db, "admin")
            ag = Agents("127.0.0.1:%d" % d.agent_port)
            w = ag.connect("cfg1", cpus=4)
            self.assertEqual(w["interval_ms"], 3000)            # 9 s / 3
            h = Client(port, tok).ok("GET", "/v1/hosts/cfg1")
            self.assertEqual(h["capacity"]["vcpus"], 10)       # 4 x 2.5
            ag.close()
        finally:
            self.assertEqual(d.stop(), 0)

    def test_example_config(self):
        # deploy/droverd.example.json starts droverd as it is (the command
        # line moves the database and the ports into the test's own room).
        example = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(ARGS.openapi))),
                               "deploy", "droverd.example.json")
        d = Droverd(self.tmp, db=self.db)
        d.argv = lambda: [ARGS.droverd, "serve", "--config", example, "--db", self.db,
                          "--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"]
        d.start()
        self.assertEqual(d.stop(), 0)

    def test_sigterm_and_port_in_use(self):
        d = Droverd(self.tmp).start()
        busy = d.http_port
        p = subprocess.run([ARGS.droverd, "serve", "--db", os.path.join(self.tmp, "other.db"),
                            "--listen", "127.0.0.1:%d" % busy, "--agent-listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(p.returncode, 1)
        self.assertIn("--listen listening on '127.0.0.1:%d'" % busy, p.stderr)
        # One droverd per database.
        p = subprocess.run([ARGS.droverd, "serve", "--db", d.db, "--listen", "127.0.0.1:0",
                            "--agent-listen", "127.0.0.1:0"], capture_output=True, text=True,
                           timeout=10)
        self.assertEqual(p.returncode, 1)
        self.assertIn("is in use by another droverd serve", p.stderr)
        self.assertEqual(token(d.db, "reader")[:4], "drv_")   # token commands still work
        self.assertEqual(d.stop(signal.SIGINT), 0)
        self.assertIn("stopping (Interrupt)", d.log())
        d = Droverd(self.tmp).start()
        self.assertEqual(d.stop(signal.SIGTERM), 0)
        self.assertIn("stopping (Terminated)", d.log())


def main():
    global ARGS, API
    ap = argparse.ArgumentParser()
    ap.add_argument("--droverd", required=True)
    ap.add_argument("--fakeagent", required=True)
    ap.add_argument("--openapi", required=True)
    ap.add_argument("tests", nargs="*")
    ARGS, rest = ap.parse_known_args()
    API = OpenApi(ARGS.openapi)
    names = {"Agents": "Agents_"}
    tests = [names.get(t, t) for t in ARGS.tests] or ["Api", "Agents_", "Restart", "Cli"]
    suite = unittest.defaultTestLoader.loadTestsFromNames(tests, sys.modules[__name__])
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
