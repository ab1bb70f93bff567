#!/usr/bin/python3
"""fakeaws: a strict local emulator of the EBS direct API and of a few EC2
Query API calls, for testing clients without an AWS account.

  server.py --port PORT --state DIR [--access-key AK] [--secret-key SK]
            [--region us-east-1] [--faults JSON] [--complete-delay SECONDS]
            [--minute-seconds S] [--token-lifetime S] [--expired-token TOKEN]
            [--page-size N] [--log FILE]

Listens on 127.0.0.1 (HTTP/1.1, keep-alive). When listening it prints one
line "ready PORT" on stdout. Every request must carry a valid SigV4
signature; the credential scope's service ("ebs" or "ec2") tells which API a
request is for. State lives in DIR and survives restarts. Paths under
/_fakeaws/ are an unsigned control API (fault rules, statistics, forcing
a snapshot to expire, an image's billing codes). See README.md.
"""

import argparse
import hashlib
import http.server
import json
import os
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True     # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ebs  # noqa: E402
import ec2  # noqa: E402
from sigv4check import AuthError, Verifier, parse_query, service_of  # noqa: E402
from state import Store  # noqa: E402

DEFAULT_ACCESS_KEY = "AKIDEXAMPLE"
DEFAULT_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

FAULT_KINDS = ("throttle", "500", "drop", "drop_after", "slow", "corrupt", "stuck", "answer",
               "expired_token")
# Kinds that only make sense for one operation.
FAULT_ONLY_FOR = {"corrupt": ("GetSnapshotBlock", "PutSnapshotBlock"), "stuck": ("CompleteSnapshot",),
                  "expired_token": ("GetSnapshotBlock",)}


class Faults:
    """The fault rule list, with the counters that decide which request a
    rule hits."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []

    @staticmethod
    def validate(rules):
        if not isinstance(rules, list):
            raise ValueError("the fault rules must be a JSON list")
        out = []
        for r in rules:
            if not isinstance(r, dict):
                raise ValueError("a fault rule must be an object: %r" % (r,))
            unknown = set(r) - {"op", "kind", "every", "count", "delay_ms", "body"}
            if unknown:
                raise ValueError("unknown fault rule keys %s" % sorted(unknown))
            op, kind = r.get("op", "*"), r.get("kind")
            if kind not in FAULT_KINDS:
                raise ValueError("fault kind %r is not one of %s" % (kind, ", ".join(FAULT_KINDS)))
            every, count, delay = r.get("every", 1), r.get("count"), r.get("delay_ms", 1000)
            for name, v in (("every", every), ("delay_ms", delay)):
                if not isinstance(v, int) or isinstance(v, bool) or v < (1 if name == "every" else 0):
                    raise ValueError("%s must be an integer >= %d" % (name, 1 if name == "every" else 0))
            if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
                raise ValueError("count must be an integer >= 0")
            body = r.get("body")
            if (kind == "answer") != isinstance(body, str):
                raise ValueError("a rule of kind 'answer' takes a string 'body', and only it")
            out.append({"op": op, "kind": kind, "every": every, "count": count, "delay_ms": delay,
                        "body": body, "seen": 0, "injected": 0})
        return out

    def set(self, rules):
        rules = self.validate(rules)
        with self.lock:
            self.rules = rules

    def show(self):
        with self.lock:
            return [dict(r) for r in self.rules]

    def pick(self, op):
        """The rule that hits this request, or None. Every matching rule
        counts the request; the first that fires wins."""
        hit = None
        with self.lock:
            for r in self.rules:
                if r["op"] not in ("*", op):
                    continue
                only = FAULT_ONLY_FOR.get(r["kind"])
                if only and op not in only:
                    continue
                r["seen"] += 1
                if hit is None and r["seen"] % r["every"] == 0 and (r["count"] is None or r["injected"] < r["count"]):
                    r["injected"] += 1
                    hit = dict(r)
        return hit


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = {}
        self.puts = {}

    def _op(self, op):
        return self.ops.setdefault(op, {"requests": 0, "faults": 0, "responses": {}})

    def request(self, op):
        with self.lock:
            self._op(op)["requests"] += 1

    def fault(self, op, kind):
        with self.lock:
            o = self._op(op)
            o["faults"] += 1
            o.setdefault("fault_kinds", {})
            o["fault_kinds"][kind] = o["fault_kinds"].get(kind, 0) + 1

    def response(self, op, status):
        with self.lock:
            r = self._op(op)["responses"]
            r[str(status)] = r.get(str(status), 0) + 1

    def put(self, snap_id):
        with self.lock:
            self.puts[snap_id] = self.puts.get(snap_id, 0) + 1

    def snapshot(self, store):
        with self.lock:
            ops = json.loads(json.dumps(self.ops))
            puts = dict(self.puts)
        snaps = {}
        with store.lock:
            for sid, s in store.snaps.items():
                snaps[sid] = {"put_requests": puts.get(sid, 0), "blocks": len(s.blocks),
                              "status": s.status(), "deleted": bool(s.meta.get("Deleted"))}
        return {"ops": ops, "snapshots": snaps}


class Request:
    """What an operation handler sees of a request."""

    def __init__(self, method, path, query, headers, body, body_digest, params=None):
        self.method = method
        self.path = path
        self.query = dict(query)
        self.query_pairs = query
        self.headers = headers
        self.body = body
        self.body_digest = body_digest
        self.params = params or {}


class DropConnection(Exception):
    pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakeaws"
    disable_nagle_algorithm = True
    timeout = 120           # idle keep-alive connections are closed after this

    # --- plumbing ----------------------------------------------------------
    def version_string(self):
        return self.server_version

    def log_request(self, code="-", size="-"):
        pass

    def log_message(self, fmt, *args):
        self.server.log("%s %s" % (self.address_string(), fmt % args))

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding")
        if te and te.lower() == "chunked":
            parts = []
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(16)
            return b"".join(parts)
        n = self.headers.get("Content-Length")
        if not n:
            return b""
        n = int(n)
        data = self.rfile.read(n)
        if len(data) != n:
            raise DropConnection()
        return data

    def _send(self, status, headers, body):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    # --- one request -------------------------------------------------------
    def _handle(self):
        t0 = time.time()
        raw_path, _, raw_query = self.path.partition("?")
        try:
            body = self._read_body()
        except (DropConnection, ValueError):
            self._drop()
            return
        if raw_path.startswith("/_fakeaws/"):
            status, headers, out = self._control(raw_path, body)
            self._send(status, headers, out)
            return

        srv = self.server
        service = service_of(self.headers.get("Authorization"))
        if service not in ("ebs", "ec2"):
            service = "ebs" if raw_path.startswith("/snapshots") else "ec2"
        query = parse_query(raw_query)
        body_digest = None
        if service == "ebs":
            op, params = ebs.route(self.command, raw_path)
            if op is None:
                op = "Unknown"
        else:
            params = None
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if self.command == "POST" and ctype == "application/x-www-form-urlencoded":
                try:
                    form = parse_query(body.decode("utf-8"))
                except UnicodeDecodeError:
                    form = []
            elif self.command == "GET":
                form = query
            else:
                form = None
            op = dict(form).get("Action", "Unknown") if form is not None else "Unknown"
        srv.stats.request(op)

        if op == "PutSnapshotBlock" or self.headers.get("X-Amz-Content-SHA256") not in (None, "UNSIGNED-PAYLOAD"):
            body_digest = hashlib.sha256(body).digest()
        fault = None
        try:
            try:
                srv.verifier.verify(self.command, raw_path, query, self.headers, body,
                                    body_digest.hex() if body_digest is not None else None)
            except AuthError as e:
                raise self._auth_error(service, e)
            if service == "ebs" and op == "Unknown":
                raise ebs.EbsError("UnknownOperationException", "No operation matches %s %s" % (self.command, raw_path))
            if service == "ec2" and form is None:
                raise ec2.Ec2Error("InvalidParameterValue", "EC2 requests are a form-encoded POST or a GET")

            if op == "PutSnapshotBlock":
                srv.stats.put(params["snapshotId"])
            fault = srv.faults.pick(op)
            if fault is not None:
                srv.stats.fault(op, fault["kind"])
                kind = fault["kind"]
                if kind == "drop":
                    self._drop()
                    srv.log_request(op, service, "dropped", fault, t0)
                    return
                if kind == "answer":
                    # a hostile service: this body, verbatim, as a success
                    out = fault["body"].encode()
                    self._send(200, [("Content-Type", "application/json" if service == "ebs"
                                      else "text/xml")], out)
                    srv.log_request(op, service, 200, fault, t0)
                    return
                if kind == "slow":
                    time.sleep(fault["delay_ms"] / 1000.0)
                elif kind == "throttle":
                    raise (ebs.EbsError("RequestThrottledException", "The request was throttled. Slow down.",
                                        "ACCOUNT_THROTTLED") if service == "ebs"
                           else ec2.Ec2Error("RequestLimitExceeded", "Request limit exceeded."))
                elif kind == "expired_token":
                    raise ebs.EbsError("ValidationException", "The block token has expired.",
                                       "INVALID_BLOCK_TOKEN")
                elif kind == "500":
                    raise (ebs.EbsError("InternalServerException", "An internal error has occurred.")
                           if service == "ebs" else
                           ec2.Ec2Error("InternalError", "An internal error has occurred."))

            if service == "ebs":
                if op == "PutSnapshotBlock" and fault and fault["kind"] == "corrupt" and body:
                    # the block arrives damaged, as if changed in transit
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                    body_digest = hashlib.sha256(body).digest()
                req = Request(self.command, raw_path, query, self.headers, body, body_digest, params)
                fn = ebs.OPERATIONS[op]
                if op == "GetSnapshotBlock":
                    status, headers, out = fn(srv.store, req, corrupt=bool(fault and fault["kind"] == "corrupt"))
                elif op == "CompleteSnapshot":
                    status, headers, out = fn(srv.store, req, stuck=bool(fault and fault["kind"] == "stuck"))
                else:
                    status, headers, out = fn(srv.store, req)
            else:
                status, headers, out = ec2.run(srv.store, op, form)
        except ebs.EbsError as e:
            status, headers, out = ebs.error_response(e.code, e.message, e.reason)
        except ec2.Ec2Error as e:
            status, headers, out = ec2.error_response(e.code, e.message)
        except Exception as e:  # a bug in the emulator: say so loudly
            import traceback
            traceback.print_exc()
            msg = "fakeaws internal error: %s: %s" % (type(e).__name__, e)
            status, headers, out = (ebs.error_response("InternalServerException", msg) if service == "ebs"
                                    else ec2.error_response("InternalError", msg))
        if fault is not None and fault["kind"] == "drop_after":
            self._drop()
            srv.log_request(op, service, "%d dropped" % status, fault, t0)
            return
        srv.stats.response(op, status)
        self._send(status, headers, out)
        err = ""
        if status >= 300:
            err = dict(headers).get("x-amzn-ErrorType", "")
            if not err and out.startswith(b"<?xml"):
                s = out.decode("utf-8", "replace")
                err = s[s.find("<Code>") + 6:s.find("</Code>")] if "<Code>" in s else ""
        srv.log_request(op, service, "%d %s" % (status, err), fault, t0)

    def _auth_error(self, service, e):
        if service == "ebs":
            code = {"missing": "MissingAuthenticationTokenException", "incomplete": "IncompleteSignatureException",
                    "unrecognized": "UnrecognizedClientException", "signature": "InvalidSignatureException",
                    "expired-token": "ExpiredTokenException", "skew": "InvalidSignatureException",
                    "scope": "InvalidSignatureException"}[e.kind]
            return ebs.EbsError(code, e.message)
        code = {"missing": "MissingAuthenticationToken", "incomplete": "IncompleteSignature",
                "unrecognized": "AuthFailure", "signature": "SignatureDoesNotMatch",
                "expired-token": "ExpiredToken", "skew": "RequestExpired", "scope": "AuthFailure"}[e.kind]
        msg = e.message
        if e.kind == "unrecognized":
            msg = "AWS was not able to validate the provided access credentials"
        elif e.kind == "skew":
            msg = "Request has expired. " + e.message
        return ec2.Ec2Error(code, msg)

    # --- control API -------------------------------------------------------
    def _control(self, path, body):
        srv = self.server

        def reply(status, obj):
            return status, [("Content-Type", "application/json")], (json.dumps(obj, indent=1) + "\n").encode()

        parts = path.strip("/").split("/")
        if parts == ["_fakeaws", "faults"]:
            if self.command == "GET":
                return reply(200, srv.faults.show())
            if self.command == "POST":
                try:
                    srv.faults.set(json.loads(body.decode() or "[]"))
                except (ValueError, UnicodeDecodeError) as e:
                    return reply(400, {"error": str(e)})
                srv.log("control: fault rules set to %s" % body.decode(errors="replace"))
                return reply(200, srv.faults.show())
        elif parts == ["_fakeaws", "stats"] and self.command == "GET":
            return reply(200, srv.stats.snapshot(srv.store))
        elif len(parts) == 4 and parts[:2] == ["_fakeaws", "snapshots"] and parts[3] == "expire" \
                and self.command == "POST":
            with srv.store.lock:
                s = srv.store.get(parts[2])
                if s is None:
                    return reply(404, {"error": "no snapshot %s" % parts[2]})
                if s.status() != "pending":
                    return reply(409, {"error": "%s is %s, not pending" % (s.id, s.status())})
                s.fail("Snapshot timed out (forced by the control API)")
                return reply(200, {"SnapshotId": s.id, "Status": "error"})
        elif len(parts) == 4 and parts[:2] == ["_fakeaws", "images"] and parts[3] == "billing" \
                and self.command == "POST":
            try:
                return reply(200, ec2.set_billing(srv.store, parts[2], json.loads(body.decode() or "{}")))
            except KeyError:
                return reply(404, {"error": "no image %s" % parts[2]})
            except (ValueError, UnicodeDecodeError) as e:
                return reply(400, {"error": str(e)})
        return reply(404, {"error": "unknown control request %s %s" % (self.command, path)})


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, addr, store, verifier, faults, logfile):
        super().__init__(addr, Handler)
        self.store = store
        self.verifier = verifier
        self.faults = faults
        self.stats = Stats()
        self._logf = logfile
        self._loglock = threading.Lock()

    def log(self, line):
        with self._loglock:
            self._logf.write("%s fakeaws: %s\n" % (time.strftime("%H:%M:%S"), line))
            self._logf.flush()

    def log_request(self, op, service, result, fault, t0):
        self.log("%s %s %s%s %.1fms" % (service, op, result,
                                        " fault=%s" % fault["kind"] if fault else "", (time.time() - t0) * 1000))


def main():
    ap = argparse.ArgumentParser(description="Local emulator of the EBS direct API and some EC2 calls.")
    ap.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 (0: pick a free one)")
    ap.add_argument("--state", required=True, help="directory holding the persistent state")
    ap.add_argument("--access-key", default=DEFAULT_ACCESS_KEY)
    ap.add_argument("--secret-key", default=DEFAULT_SECRET_KEY)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--faults", default="[]", help="JSON list of fault rules (or @FILE)")
    ap.add_argument("--complete-delay", type=float, default=0.0,
                    help="seconds from CompleteSnapshot until the snapshot is completed")
    ap.add_argument("--minute-seconds", type=float, default=60.0,
                    help="length of a StartSnapshot Timeout minute in real seconds")
    ap.add_argument("--token-lifetime", type=float, default=7 * 24 * 3600.0,
                    help="seconds a block token stays valid (ExpiryTime in the listings)")
    ap.add_argument("--expired-token", default=None,
                    help="a session token that is answered with the expired-token error")
    ap.add_argument("--page-size", type=int, default=0,
                    help="ListSnapshotBlocks pages hold at most N blocks, whatever maxResults asks")
    ap.add_argument("--log", default=None, help="append the request log to FILE instead of stderr")
    args = ap.parse_args()

    faults = Faults()
    try:
        spec = args.faults
        if spec.startswith("@"):
            with open(spec[1:]) as f:
                spec = f.read()
        faults.set(json.loads(spec))
    except (ValueError, OSError) as e:
        ap.error("--faults: %s" % e)

    os.makedirs(args.state, exist_ok=True)
    store = Store(args.state, region=args.region, minute_seconds=args.minute_seconds,
                  complete_delay=args.complete_delay, token_lifetime=args.token_lifetime,
                  page_size=args.page_size)
    verifier = Verifier({args.access_key: args.secret_key}, args.region, args.expired_token)
    logf = open(args.log, "a") if args.log else sys.stderr
    srv = Server(("127.0.0.1", args.port), store, verifier, faults, logf)
    srv.log("state %s, region %s, %d snapshot(s), %d image(s)"
            % (args.state, args.region, len(store.snaps), len(store.images)))
    sys.stdout.write("ready %d\n" % srv.server_address[1])
    sys.stdout.flush()
    try:
        srv.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
