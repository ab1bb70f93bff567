// start.js - runs @20minutes/s3rver, a local S3 server that checks SigV4
// signatures, for amiport's tests (the package has no command line):
//
//   node start.js DIRECTORY [--port N] [--key ACCESS_KEY:SECRET_KEY]... [--fail-put FILE]
//
// It listens on 127.0.0.1 (port 0, the default, picks a free one), keeps its
// buckets and objects under DIRECTORY, and accepts the key pair S3RVER/S3RVER
// and every --key pair. Once it listens it prints "ready PORT" on stdout,
// then one line per answered request,
//
//   request METHOD URL STATUS X-AMZ-ACL CONTENT-MD5 SIGNED-HEADERS
//
// with "-" for a header the request did not have (SIGNED-HEADERS is the
// list from its Authorization header), so that a test can count requests and
// see what was sent. Requests without an Authorization header are served
// anonymously, as s3rver does. With --fail-put, while FILE exists, a PUT
// whose URL contains one of its lines is refused (403 AccessDenied), to make
// an upload fail midway. SIGTERM or SIGINT stops it.
'use strict';

const fs = require('fs');
const S3rver = require('@20minutes/s3rver');
const AWSAccount = require('@20minutes/s3rver/lib/models/account');

function usage(msg) {
  process.stderr.write(`start.js: ${msg}\n` +
    'usage: node start.js DIRECTORY [--port N] [--key ACCESS_KEY:SECRET_KEY]...\n');
  process.exit(2);
}

const args = process.argv.slice(2);
let directory = null;
let port = 0;
let failPut = null;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--port') {
    port = Number(args[++i]);
    if (!Number.isInteger(port) || port < 0 || port > 65535) usage(`bad port '${args[i]}'`);
  } else if (a === '--key') {
    const v = args[++i] || '';
    const colon = v.indexOf(':');
    if (colon < 1 || colon === v.length - 1) usage('--key needs ACCESS_KEY:SECRET_KEY');
    AWSAccount.DUMMY_ACCOUNT.createKeyPair(v.slice(0, colon), v.slice(colon + 1));
  } else if (a === '--fail-put') {
    failPut = args[++i];
    if (!failPut) usage('--fail-put needs FILE');
  } else if (a.startsWith('-') || directory !== null) {
    usage(`unexpected argument '${a}'`);
  } else {
    directory = a;
  }
}
if (directory === null) usage('no DIRECTORY');
fs.mkdirSync(directory, { recursive: true });

const server = new S3rver({ address: '127.0.0.1', port, directory, silent: true });
if (failPut) {
  // first of all middleware: s3rver composes them when it starts listening
  server.middleware.unshift(async (ctx, next) => {
    let lines = [];
    try {
      lines = fs.readFileSync(failPut, 'utf8').split('\n').filter((l) => l);
    } catch (e) {
      lines = [];
    }
    if (ctx.method === 'PUT' && lines.some((l) => ctx.url.includes(l))) {
      ctx.status = 403;
      ctx.type = 'application/xml';
      ctx.body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>' +
        '<Message>Access Denied (refused by start.js --fail-put)</Message></Error>';
      return;
    }
    await next();
  });
}
server.run().then(
  (addr) => {
    server.httpServer.on('request', (req, res) => {
      const h = req.headers;
      const signed = /SignedHeaders=([^,\s]+)/.exec(h.authorization || '');
      const fields = [req.method, req.url, null, h['x-amz-acl'], h['content-md5'], signed && signed[1]];
      res.on('finish', () => {
        fields[2] = res.statusCode;
        process.stdout.write(`request ${fields.map((f) => (f == null || f === '' ? '-' : f)).join(' ')}\n`);
      });
    });
    process.stdout.write(`ready ${addr.port}\n`);
  },
  (err) => {
    process.stderr.write(`start.js: cannot start s3rver: ${err.message}\n`);
    process.exit(1);
  },
);

function stop() {
  server.close().then(() => process.exit(0), () => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
