"""Verification of AWS Signature Version 4 on received requests.

The canonical request is rebuilt with botocore's own SigV4Auth code from what
arrived on the wire: the method, the raw path, the query string (decoded and
re-encoded the canonical way), exactly the headers named in SignedHeaders,
and the payload hash (the X-Amz-Content-SHA256 header when present, which may
be UNSIGNED-PAYLOAD, else the SHA-256 of the body).
"""

import datetime
import hashlib
import hmac
import re
from urllib.parse import unquote_plus

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials

SKEW_SECONDS = 15 * 60
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class AuthError(Exception):
    """kind is one of: missing, incomplete, unrecognized, signature,
    expired-token, skew, scope."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


def parse_query(raw_query):
    """Decodes a query string or form body into a list of (key, value)
    pairs. '+' is a space, as in form encoding; a literal '+' must be
    sent as %2B."""
    pairs = []
    if not raw_query:
        return pairs
    for part in raw_query.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        pairs.append((unquote_plus(k), unquote_plus(v)))
    return pairs


def parse_authorization(value):
    """Returns dict(access_key, date, region, service, signed_headers,
    signature) or raises AuthError."""
    if not value:
        raise AuthError("missing", "Missing Authentication Token")
    algo, _, rest = value.strip().partition(" ")
    if algo != "AWS4-HMAC-SHA256":
        raise AuthError("incomplete",
                        "Unsupported authorization type %r; only AWS4-HMAC-SHA256 is accepted" % algo)
    fields = {}
    for item in rest.split(","):
        k, eq, v = item.strip().partition("=")
        if eq:
            fields[k.strip()] = v.strip()
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in fields]
    if missing:
        raise AuthError("incomplete",
                        "Authorization header requires %s parameter(s). Authorization=%s"
                        % (", ".join("'%s'" % m for m in missing), value))
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise AuthError("incomplete",
                        "Credential should be of the form ACCESSKEY/YYYYMMDD/REGION/SERVICE/aws4_request, got '%s'"
                        % fields["Credential"])
    return {
        "access_key": scope[0],
        "date": scope[1],
        "region": scope[2],
        "service": scope[3],
        "signed_headers": [h for h in fields["SignedHeaders"].split(";") if h],
        "signature": fields["Signature"],
    }


def service_of(authorization):
    """The service named in the credential scope, or None."""
    try:
        return parse_authorization(authorization)["service"]
    except AuthError:
        return None


class _Canonicaliser(SigV4Auth):
    """SigV4Auth that signs exactly the headers the client named."""

    def __init__(self, secret, service, region, signed):
        super().__init__(Credentials("unused", secret), service, region)
        self._signed = signed

    def headers_to_sign(self, request):
        hm = HTTPHeaders()
        for name, values in self._signed:
            for v in values:
                hm[name] = v
        return hm


class Verifier:
    def __init__(self, keys, region, expired_token=None):
        self.keys = dict(keys)          # access key -> secret key
        self.region = region
        self.expired_token = expired_token

    def verify(self, method, raw_path, query_pairs, headers, body, body_sha256=None):
        """headers: an email.message.Message (http.server's self.headers).
        body_sha256: the hex SHA-256 of body, if already computed.
        Returns the parsed authorization dict; raises AuthError."""
        auth = parse_authorization(headers.get("Authorization"))
        token = headers.get("X-Amz-Security-Token")
        if self.expired_token is not None and token == self.expired_token:
            raise AuthError("expired-token", "The security token included in the request is expired")
        if auth["access_key"] not in self.keys:
            raise AuthError("unrecognized", "The security token included in the request is invalid.")
        amz_date = headers.get("X-Amz-Date")
        if not amz_date:
            raise AuthError("incomplete",
                            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            raise AuthError("incomplete", "X-Amz-Date '%s' is not of the form YYYYMMDD'T'HHMMSS'Z'" % amz_date)
        if auth["date"] != amz_date[:8]:
            raise AuthError("scope", "Credential should be scoped to a valid date, not '%s'; X-Amz-Date is %s"
                            % (auth["date"], amz_date))
        if auth["region"] != self.region:
            raise AuthError("scope", "Credential should be scoped to a valid region, not '%s'. " % auth["region"])
        now = datetime.datetime.now(datetime.timezone.utc)
        if abs((now - when).total_seconds()) > SKEW_SECONDS:
            raise AuthError("skew",
                            "Signature expired: %s is now earlier than %s (%s - 15 min.)"
                            % (amz_date, (now - datetime.timedelta(seconds=SKEW_SECONDS)).strftime("%Y%m%dT%H%M%SZ"),
                               now.strftime("%Y%m%dT%H%M%SZ"))
                            if when < now else
                            "Signature not yet current: %s is still later than %s (%s + 15 min.)"
                            % (amz_date, (now + datetime.timedelta(seconds=SKEW_SECONDS)).strftime("%Y%m%dT%H%M%SZ"),
                               now.strftime("%Y%m%dT%H%M%SZ")))
        signed_names = auth["signed_headers"]
        if "host" not in signed_names:
            raise AuthError("signature", "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
        if signed_names != sorted(signed_names) or len(set(signed_names)) != len(signed_names):
            raise AuthError("signature", "SignedHeaders must be lower case, sorted and without repeats: '%s'"
                            % ";".join(signed_names))
        signed = []
        for name in signed_names:
            if name != name.lower():
                raise AuthError("signature", "SignedHeaders must be lower case: '%s'" % name)
            values = headers.get_all(name)
            if values is None:
                raise AuthError("signature", "Header '%s' is named in SignedHeaders but absent" % name)
            signed.append((name, values))

        content_sha = headers.get("X-Amz-Content-SHA256")
        if content_sha is not None and content_sha != "UNSIGNED-PAYLOAD":
            if not _HEX64.match(content_sha):
                raise AuthError("signature", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or a lower-case hex SHA-256")
            actual = body_sha256 or hashlib.sha256(body).hexdigest()
            if content_sha != actual:
                raise AuthError("signature",
                                "The provided 'x-amz-content-sha256' header does not match what was computed.")

        req = AWSRequest(method=method, url="http://signed.invalid" + raw_path, data=body,
                         params=query_pairs)
        if content_sha is not None:
            req.headers["X-Amz-Content-SHA256"] = content_sha
        elif body_sha256 is not None:
            req.headers["X-Amz-Content-SHA256"] = body_sha256
        req.context["timestamp"] = amz_date
        signer = _Canonicaliser(self.keys[auth["access_key"]], auth["service"], auth["region"], signed)
        canonical = signer.canonical_request(req)
        sts = signer.string_to_sign(req, canonical)
        want = signer.signature(sts, req)
        if not hmac.compare_digest(want, auth["signature"]):
            raise AuthError("signature",
                            "The request signature we calculated does not match the signature you provided. "
                            "Check your AWS Secret Access Key and signing method. Consult the service "
                            "documentation for details.\n\nThe Canonical String for this request should have been\n'"
                            + canonical + "'\n\nThe String-to-Sign should have been\n'" + sts + "'\n")
        return auth
