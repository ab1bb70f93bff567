#!/usr/bin/python3
"""fakeimds.py - a tiny stand-in for the EC2 instance metadata service (IMDSv2).

    fakeimds.py PORTFILE LOG [--region R] [--expire-in SECONDS] [--no-role]
                             [--hang] [--role NAME] [--key-prefix P]

Listens on 127.0.0.1 on a free port and writes the port to PORTFILE once it
accepts connections. Like the real service (EC2 User Guide, "Use the Instance
Metadata Service to access instance metadata", IMDSv2):

  PUT /latest/api/token            needs X-aws-ec2-metadata-token-ttl-seconds
                                   (1..21600), answers a fresh session token
  GET /latest/meta-data/...        needs X-aws-ec2-metadata-token with a token
                                   it gave out; without one: 401
  GET /latest/meta-data/iam/security-credentials/        the role name
  GET /latest/meta-data/iam/security-credentials/ROLE    JSON credentials:
      Code "Success", AccessKeyId (P + a counter), SecretAccessKey, Token,
      Expiration (now + --expire-in, default 6 hours)
  GET /latest/meta-data/placement/region                 the region

--no-role answers 404 on the role list (an instance without a role); --hang
accepts connections and never answers. Every request is appended to LOG as
"METHOD PATH STATUS", so tests can count them.
"""
import argparse
import http.server
import os
import secrets
import socketserver
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("portfile")
ap.add_argument("log")
ap.add_argument("--region", default="eu-west-3")
ap.add_argument("--expire-in", type=int, default=6 * 3600)
ap.add_argument("--no-role", action="store_true")
ap.add_argument("--hang", action="store_true")
ap.add_argument("--role", default="amiport-test-role")
ap.add_argument("--key-prefix", default="ASIAFAKEIMDS")
ap.add_argument("--secret", default="imdsSECRETimdsSECRETimdsSECRET0123456789")
ap.add_argument("--token", default="imdsTOKENimdsTOKENimdsTOKEN")
args = ap.parse_args()

tokens = set()
lock = threading.Lock()
served = [0]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        pass

    def answer(self, status, body=b"", ctype="text/plain"):
        with lock:
            with open(args.log, "a") as f:
                f.write("%s %s %d\n" % (self.command, self.path, status))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def hang(self):
        time.sleep(30)

    def do_PUT(self):
        if args.hang:
            return self.hang()
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if self.path != "/latest/api/token":
            return self.answer(404)
        if self.headers.get("X-Forwarded-For"):
            return self.answer(403)
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return self.answer(400)
        tok = secrets.token_urlsafe(40)
        with lock:
            tokens.add(tok)
        self.answer(200, tok.encode())

    def do_GET(self):
        if args.hang:
            return self.hang()
        tok = self.headers.get("X-aws-ec2-metadata-token")
        with lock:
            ok = tok in tokens
        if not ok:
            return self.answer(401)
        base = "/latest/meta-data/iam/security-credentials/"
        if self.path == "/latest/meta-data/placement/region":
            return self.answer(200, args.region.encode())
        if self.path == base:
            if args.no_role:
                return self.answer(404)
            return self.answer(200, args.role.encode())
        if self.path == base + args.role and not args.no_role:
            with lock:
                served[0] += 1
                n = served[0]
            exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + args.expire_in))
            body = (
                '{\n  "Code" : "Success",\n  "LastUpdated" : "%s",\n  "Type" : "AWS-HMAC",\n'
                '  "AccessKeyId" : "%s%d",\n  "SecretAccessKey" : "%s",\n  "Token" : "%s",\n'
                '  "Expiration" : "%s"\n}'
                % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), args.key_prefix, n,
                   args.secret, args.token, exp)
            )
            return self.answer(200, body.encode(), "application/json")
        self.answer(404)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


srv = Server(("127.0.0.1", 0), Handler)
tmp = args.portfile + ".tmp"
with open(tmp, "w") as f:
    f.write("%d\n" % srv.server_address[1])
os.rename(tmp, args.portfile)
try:
    srv.serve_forever()
except KeyboardInterrupt:
    pass
sys.exit(0)
