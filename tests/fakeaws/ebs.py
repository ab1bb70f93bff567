"""The EBS direct API (service "ebs", protocol rest-json), as in botocore's
ebs/2019-11-02/service-2.json: StartSnapshot, PutSnapshotBlock,
CompleteSnapshot, ListSnapshotBlocks, GetSnapshotBlock, ListChangedBlocks.

Each operation takes (store, req) and returns (status, headers, body) or
raises EbsError. Errors go out as AWS's rest-json services send them: the
HTTP status of the error shape, the header x-amzn-ErrorType: <Code> and a
JSON body {"message": ..., "Reason": ...}.
"""

import base64
import binascii
import bisect
import hashlib
import json
import re
import time
import uuid
from urllib.parse import unquote

from state import ACCOUNT, BLOCK_SIZE, BLOCKS_PER_GIB, linear_checksum

_SNAP_RE = re.compile(r"^snap-[0-9a-f]+$")
_B64_RE = re.compile(r"^[A-Za-z0-9+/=]+$")
_KMS_RE = re.compile(r"arn:aws[a-z\-]*:kms:.*:[0-9]{12}:key/.*")

# Error codes and their HTTP statuses; the modelled ones are read from
# botocore's service model below so that they always agree with it.
STATUS = {
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "RequestThrottledException": 400,
    "ServiceQuotaExceededException": 402,
    "ConcurrentLimitExceededException": 400,
    "ConflictException": 409,
    "InternalServerException": 500,
    # not in the model: sent by the AWS front end
    "InvalidSignatureException": 403,
    "UnrecognizedClientException": 403,
    "ExpiredTokenException": 403,
    "MissingAuthenticationTokenException": 403,
    "IncompleteSignatureException": 403,
    "SerializationException": 400,
    "UnknownOperationException": 404,
}


def _load_model_statuses():
    try:
        import botocore.loaders
        model = botocore.loaders.create_loader().load_service_model("ebs", "service-2")
    except Exception:
        return
    for name, shape in model["shapes"].items():
        if shape.get("exception") and "httpStatusCode" in shape.get("error", {}):
            STATUS[name] = shape["error"]["httpStatusCode"]


_load_model_statuses()


class EbsError(Exception):
    def __init__(self, code, message, reason=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason


def error_response(code, message, reason=None):
    body = {"message": message}
    if reason:
        body["Reason"] = reason
    data = json.dumps(body).encode()
    headers = [("x-amzn-ErrorType", code), ("Content-Type", "application/json"),
               ("x-amzn-RequestId", str(uuid.uuid4()))]
    return STATUS.get(code, 400), headers, data


def _json_response(status, obj, extra=()):
    headers = [("Content-Type", "application/json"), ("x-amzn-RequestId", str(uuid.uuid4()))]
    headers.extend(extra)
    return status, headers, json.dumps(obj).encode()


def _invalid(message, reason="INVALID_PARAMETER_VALUE"):
    return EbsError("ValidationException", message, reason)


# --- routing -----------------------------------------------------------------

def route(method, raw_path):
    """(operation name, path parameters) or (None, None)."""
    segs = [unquote(s) for s in raw_path.split("/")]
    if not segs or segs[0] != "":
        return None, None
    segs = segs[1:]
    if segs and segs[-1] == "":
        segs = segs[:-1]
    if not segs or segs[0] != "snapshots":
        return None, None
    n = len(segs)
    if method == "POST" and n == 1:
        return "StartSnapshot", {}
    if method == "POST" and n == 3 and segs[1] == "completion":
        return "CompleteSnapshot", {"snapshotId": segs[2]}
    if n == 4 and segs[2] == "blocks":
        if method == "PUT":
            return "PutSnapshotBlock", {"snapshotId": segs[1], "blockIndex": segs[3]}
        if method == "GET":
            return "GetSnapshotBlock", {"snapshotId": segs[1], "blockIndex": segs[3]}
    if method == "GET" and n == 3 and segs[2] == "blocks":
        return "ListSnapshotBlocks", {"snapshotId": segs[1]}
    if method == "GET" and n == 3 and segs[2] == "changedblocks":
        return "ListChangedBlocks", {"secondSnapshotId": segs[1]}
    return None, None


# --- helpers -----------------------------------------------------------------

def _snapshot(store, snap_id, what="snapshot"):
    if not snap_id or not _SNAP_RE.match(snap_id) or len(snap_id) > 64:
        raise EbsError("ValidationException",
                       "1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: "
                       "Member must satisfy regular expression pattern: ^snap-[0-9a-f]+$" % (snap_id, what),
                       "INVALID_SNAPSHOT_ID")
    s = store.get(snap_id)
    if s is None:
        raise EbsError("ResourceNotFoundException", "The snapshot '%s' does not exist." % snap_id,
                       "SNAPSHOT_NOT_FOUND")
    return s


def _int(value, name, lo=None, hi=None):
    try:
        if value is None or not re.match(r"^-?[0-9]+$", value.strip()):
            raise ValueError
        v = int(value)
    except ValueError:
        raise _invalid("Value '%s' at '%s' is not a valid integer" % (value, name))
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        bounds = []
        if lo is not None:
            bounds.append("greater than or equal to %d" % lo)
        if hi is not None:
            bounds.append("less than or equal to %d" % hi)
        raise _invalid("1 validation error detected: Value '%d' at '%s' failed to satisfy constraint: "
                       "Member must have value %s" % (v, name, " and ".join(bounds)))
    return v


def _block_index(req, snap):
    idx = _int(req.params["blockIndex"], "blockIndex", lo=0)
    limit = snap.meta["VolumeSize"] * BLOCKS_PER_GIB
    if idx >= limit:
        raise _invalid("Block index %d is out of range for a %d GiB snapshot (valid: 0..%d)"
                       % (idx, snap.meta["VolumeSize"], limit - 1), "INVALID_BLOCK")
    return idx


def _must_be_completed(store, snap):
    with store.lock:
        st = snap.status()
    if st != "completed":
        raise EbsError("ValidationException",
                       "The snapshot '%s' is in state '%s'; only completed snapshots can be read."
                       % (snap.id, st), "INVALID_SNAPSHOT_ID")


def _make_page_token(kind, ids, nxt):
    return base64.b64encode(("%s:%s:%d" % (kind, ",".join(ids), nxt)).encode()).decode()


def _read_page_token(tok, kind, ids):
    try:
        if not _B64_RE.match(tok) or len(tok) > 256:
            raise ValueError
        k, idpart, n = base64.b64decode(tok, validate=True).decode().split(":")
        if k != kind or idpart != ",".join(ids):
            raise ValueError
        return int(n)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise EbsError("ValidationException", "The pagination token is invalid.", "INVALID_PAGE_TOKEN")


def _paging(req, kind, ids):
    q = req.query
    max_results = _int(q["maxResults"], "maxResults", 100, 10000) if "maxResults" in q else 10000
    if q.get("pageToken"):
        start = _read_page_token(q["pageToken"], kind, ids)
    elif "startingBlockIndex" in q:
        start = _int(q["startingBlockIndex"], "startingBlockIndex", lo=0)
    else:
        start = 0
    return max_results, start


def _snapshot_view(snap):
    m = snap.meta
    out = {
        "SnapshotId": snap.id,
        "OwnerId": ACCOUNT,
        "Status": m["Status"],
        "StartTime": m["StartTime"],
        "VolumeSize": m["VolumeSize"],
        "BlockSize": BLOCK_SIZE,
        "SseType": "sse-ebs" if m.get("Encrypted") else "none",
    }
    for k in ("Description", "Tags", "KmsKeyArn", "ParentSnapshotId"):
        if m.get(k) is not None:
            out[k] = m[k]
    return out


# --- operations --------------------------------------------------------------

def start_snapshot(store, req):
    try:
        body = json.loads(req.body.decode("utf-8")) if req.body else {}
    except (ValueError, UnicodeDecodeError) as e:
        raise EbsError("SerializationException", "The request body is not valid JSON: %s" % e)
    if not isinstance(body, dict):
        raise EbsError("SerializationException", "The request body must be a JSON object")
    vs = body.get("VolumeSize")
    if vs is None:
        raise _invalid("1 validation error detected: Value null at 'volumeSize' failed to satisfy constraint: "
                       "Member must not be null", "INVALID_VOLUME_SIZE")
    if not isinstance(vs, int) or isinstance(vs, bool) or vs < 1 or vs > 65536:
        raise _invalid("Volume size %r is not valid: it must be an integer from 1 to 65536 GiB" % (vs,),
                       "INVALID_VOLUME_SIZE")
    timeout = body.get("Timeout", 60)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 10 <= timeout <= 4320:
        raise _invalid("1 validation error detected: Value '%s' at 'timeout' failed to satisfy constraint: "
                       "Member must have value between 10 and 4320" % (timeout,))
    desc = body.get("Description")
    if desc is not None and (not isinstance(desc, str) or not 1 <= len(desc) <= 255):
        raise _invalid("Description must be a string of 1 to 255 characters")
    tags = body.get("Tags")
    if tags is not None:
        if not isinstance(tags, list) or len(tags) > 50:
            raise _invalid("Tags must be a list of at most 50 tags", "INVALID_TAG")
        for t in tags:
            if (not isinstance(t, dict) or not isinstance(t.get("Key"), str) or not 1 <= len(t["Key"]) <= 127
                    or not isinstance(t.get("Value", ""), str) or len(t.get("Value", "")) > 255
                    or t["Key"].lower().startswith("aws:")):
                raise _invalid("Invalid tag %r" % (t,), "INVALID_TAG")
    encrypted = body.get("Encrypted")
    if encrypted is not None and not isinstance(encrypted, bool):
        raise EbsError("SerializationException", "Encrypted must be a boolean")
    kms = body.get("KmsKeyArn")
    parent_id = body.get("ParentSnapshotId")
    if parent_id is not None and encrypted is not None:
        raise _invalid("You can't specify ParentSnapshotId and Encrypted in the same request.")
    if kms is not None:
        if not isinstance(kms, str) or not _KMS_RE.match(kms) or len(kms) > 2048:
            raise _invalid("The KMS key ARN '%s' is not valid" % (kms,), "INVALID_CUSTOMER_KEY")
        if encrypted is not True and parent_id is None:
            raise _invalid("KmsKeyArn can only be given with Encrypted set to true", "INVALID_CUSTOMER_KEY")
    token = body.get("ClientToken")
    if token is not None and (not isinstance(token, str) or not 1 <= len(token) <= 255 or re.search(r"\s", token)):
        raise _invalid("ClientToken must be 1 to 255 characters without white space")

    params = {k: body.get(k) for k in ("VolumeSize", "ParentSnapshotId", "Tags", "Description",
                                       "Encrypted", "KmsKeyArn", "Timeout")}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()

    with store.lock:
        if token is not None and token in store.client_tokens:
            old = store.get(store.client_tokens[token])
            if old is not None:
                if old.meta.get("RequestDigest") != digest:
                    raise EbsError("ConflictException",
                                   "The request uses the same client token as a previous, but non-identical request.")
                old.status()
                return _json_response(201, _snapshot_view(old))
        parent = None
        if parent_id is not None:
            parent = _snapshot(store, parent_id, "parentSnapshotId")
            if parent.status() != "completed":
                raise _invalid("The parent snapshot '%s' is not completed." % parent_id, "INVALID_SNAPSHOT_ID")
            if vs < parent.meta["VolumeSize"]:
                raise _invalid("The volume size %d GiB is smaller than the parent snapshot's %d GiB"
                               % (vs, parent.meta["VolumeSize"]), "INVALID_VOLUME_SIZE")
        is_enc = bool(encrypted) or bool(parent and parent.meta.get("Encrypted"))
        if is_enc and kms is None:
            kms = (parent.meta.get("KmsKeyArn") if parent else None) or \
                "arn:aws:kms:%s:%s:key/00000000-0000-0000-0000-00000000ebs0" % (store.region, ACCOUNT)
        now = time.time()
        meta = {
            "VolumeSize": vs, "Status": "pending", "StartTime": round(now, 3), "LastActivity": now,
            "Timeout": timeout, "Description": desc, "Tags": tags, "Encrypted": is_enc,
            "KmsKeyArn": kms if is_enc else None, "ParentSnapshotId": parent_id,
            "ClientToken": token, "RequestDigest": digest, "Progress": 0,
        }
        snap = store.create_snapshot(meta)
        return _json_response(201, _snapshot_view(snap))


def put_snapshot_block(store, req):
    h = req.headers
    snap = _snapshot(store, req.params["snapshotId"])
    with store.lock:
        st = snap.status()
        if st != "pending" or snap.completing():
            raise EbsError("ValidationException",
                           "The snapshot '%s' is in state '%s'%s; blocks can only be written to a pending snapshot."
                           % (snap.id, st, " (completion requested)" if st == "pending" else ""),
                           "INVALID_SNAPSHOT_ID")
    idx = _block_index(req, snap)
    dl = h.get("x-amz-Data-Length")
    if dl is None:
        raise _invalid("1 validation error detected: Value null at 'dataLength' failed to satisfy constraint: "
                       "Member must not be null")
    dl = _int(dl, "dataLength")
    if dl != BLOCK_SIZE:
        raise _invalid("Invalid data length %d: the only supported size is %d bytes" % (dl, BLOCK_SIZE), "INVALID_BLOCK")
    if len(req.body) != dl:
        raise _invalid("The block data is %d bytes but x-amz-Data-Length is %d" % (len(req.body), dl), "INVALID_BLOCK")
    algo = h.get("x-amz-Checksum-Algorithm")
    if algo != "SHA256":
        raise _invalid("x-amz-Checksum-Algorithm must be SHA256, got %r" % (algo,))
    cks = h.get("x-amz-Checksum")
    if not cks:
        raise _invalid("1 validation error detected: Value null at 'checksum' failed to satisfy constraint: "
                       "Member must not be null")
    actual = base64.b64encode(req.body_digest).decode()
    if cks != actual:
        raise _invalid("The checksum '%s' does not match the block data (SHA-256 %s)" % (cks, actual), "INVALID_BLOCK")
    prog = h.get("x-amz-Progress")
    if prog is not None:
        prog = _int(prog, "progress", 0, 100)
    if h.get("Content-Encoding") not in (None, "", "identity"):
        raise _invalid("Content-Encoding %r is not supported" % h.get("Content-Encoding"), "INVALID_CONTENT_ENCODING")
    with store.lock:
        if idx in snap.inflight:
            raise _invalid("Another write to block %d of %s is in progress" % (idx, snap.id),
                           "CONFLICTING_BLOCK_UPDATE")
        snap.inflight.add(idx)
    try:
        store.write_block(snap, idx, req.body, req.body_digest)
    finally:
        with store.lock:
            snap.inflight.discard(idx)
            if prog is not None:
                snap.meta["Progress"] = prog
    return _json_response(201, {}, [("x-amz-Checksum", actual), ("x-amz-Checksum-Algorithm", "SHA256")])


def complete_snapshot(store, req, stuck=False):
    h = req.headers
    snap = _snapshot(store, req.params["snapshotId"])
    cnt = h.get("x-amz-ChangedBlocksCount")
    if cnt is None:
        raise _invalid("1 validation error detected: Value null at 'changedBlocksCount' failed to satisfy "
                       "constraint: Member must not be null")
    cnt = _int(cnt, "changedBlocksCount", lo=0)
    cks = h.get("x-amz-Checksum")
    algo = h.get("x-amz-Checksum-Algorithm")
    agg = h.get("x-amz-Checksum-Aggregation-Method")
    if cks is not None or algo is not None or agg is not None:
        if cks is None or algo != "SHA256" or agg != "LINEAR":
            raise _invalid("A checksum needs x-amz-Checksum, x-amz-Checksum-Algorithm: SHA256 and "
                           "x-amz-Checksum-Aggregation-Method: LINEAR (got %r, %r, %r)" % (cks, algo, agg))
    with store.lock:
        st = snap.status()
        if st == "error":
            raise _invalid("The snapshot '%s' is in state 'error'%s" % (
                snap.id, ": " + snap.meta["StatusMessage"] if snap.meta.get("StatusMessage") else ""),
                "INVALID_SNAPSHOT_ID")
        if snap.inflight:
            raise _invalid("Blocks of %s are still being written" % snap.id, "CONFLICTING_BLOCK_UPDATE")
        n = len(snap.blocks)
        if cnt != n:
            raise _invalid("The number of changed blocks given (%d) does not match the number of blocks "
                           "written to snapshot %s (%d)" % (cnt, snap.id, n))
        if cks is not None:
            want = linear_checksum(snap.blocks[i] for i in sorted(snap.blocks))
            if cks != want:
                raise _invalid("The aggregated checksum '%s' does not match the blocks written to %s"
                               % (cks, snap.id))
        if snap.completing() or st == "completed":
            # a repeated request (a retry after a lost answer): same answer
            return _json_response(202, {"Status": st})
        snap.meta["CompleteAt"] = time.time() + store.complete_delay
        snap.meta["ChangedBlocksCount"] = cnt
        if stuck:
            snap.meta["Stuck"] = True
        snap.save()
        return _json_response(202, {"Status": "pending"})


def list_snapshot_blocks(store, req):
    snap = _snapshot(store, req.params["snapshotId"])
    _must_be_completed(store, snap)
    max_results, start = _paging(req, "blocks", [snap.id])
    if store.page_size:  # a service may answer fewer than maxResults a page
        max_results = min(max_results, store.page_size)
    with store.lock:
        eff = snap.effective()
        keys = sorted(eff)
    pos = bisect.bisect_left(keys, start)
    page = keys[pos:pos + max_results]
    out = {
        "Blocks": [{"BlockIndex": i, "BlockToken": snap.block_token(i, eff[i][0], eff[i][1])} for i in page],
        "ExpiryTime": round(time.time() + store.token_lifetime, 3),
        "VolumeSize": snap.meta["VolumeSize"],
        "BlockSize": BLOCK_SIZE,
    }
    if pos + max_results < len(keys):
        out["NextToken"] = _make_page_token("blocks", [snap.id], keys[pos + max_results])
    return _json_response(200, out)


def get_snapshot_block(store, req, corrupt=False):
    snap = _snapshot(store, req.params["snapshotId"])
    _must_be_completed(store, snap)
    idx = _block_index(req, snap)
    tok = req.query.get("blockToken")
    if not tok:
        raise _invalid("1 validation error detected: Value null at 'blockToken' failed to satisfy constraint: "
                       "Member must not be null", "INVALID_BLOCK_TOKEN")
    with store.lock:
        ent = snap.effective().get(idx)
    verdict = "invalid" if ent is None else snap.check_block_token(tok, idx, ent[0], ent[1])
    if verdict == "expired":
        raise _invalid("The block token for block %d of %s has expired." % (idx, snap.id),
                       "INVALID_BLOCK_TOKEN")
    if verdict != "ok":
        raise _invalid("The block token '%s' is not valid for block %d of %s" % (tok, idx, snap.id),
                       "INVALID_BLOCK_TOKEN")
    owner, digest = ent
    data = store.read_block(owner, idx)
    if corrupt:
        b = bytearray(data)
        b[len(b) // 2] ^= 0x01
        data = bytes(b)
    headers = [("Content-Type", "application/octet-stream"), ("x-amzn-RequestId", str(uuid.uuid4())),
               ("x-amz-Data-Length", str(len(data))),
               ("x-amz-Checksum", base64.b64encode(digest).decode()),
               ("x-amz-Checksum-Algorithm", "SHA256")]
    return 200, headers, data


def list_changed_blocks(store, req):
    second = _snapshot(store, req.params["secondSnapshotId"], "secondSnapshotId")
    _must_be_completed(store, second)
    first = None
    if req.query.get("firstSnapshotId"):
        first = _snapshot(store, req.query["firstSnapshotId"], "firstSnapshotId")
        _must_be_completed(store, first)
    ids = [first.id if first else "", second.id]
    max_results, start = _paging(req, "changed", ids)
    with store.lock:
        if first is not None:
            if not {s.id for s in first.chain()} & {s.id for s in second.chain()}:
                raise _invalid("The snapshots %s and %s are not of the same lineage" % (first.id, second.id),
                               "UNRELATED_SNAPSHOTS")
            e1 = first.effective()
        else:
            e1 = {}
        e2 = second.effective()
        keys = sorted(i for i in set(e1) | set(e2)
                      if e1.get(i, (None,))[0] is not e2.get(i, (None,))[0])
    pos = bisect.bisect_left(keys, start)
    page = keys[pos:pos + max_results]
    blocks = []
    for i in page:
        b = {"BlockIndex": i}
        if i in e1:
            b["FirstBlockToken"] = first.block_token(i, e1[i][0], e1[i][1])
        if i in e2:
            b["SecondBlockToken"] = second.block_token(i, e2[i][0], e2[i][1])
        blocks.append(b)
    out = {
        "ChangedBlocks": blocks,
        "ExpiryTime": round(time.time() + store.token_lifetime, 3),
        "VolumeSize": second.meta["VolumeSize"],
        "BlockSize": BLOCK_SIZE,
    }
    if pos + max_results < len(keys):
        out["NextToken"] = _make_page_token("changed", ids, keys[pos + max_results])
    return _json_response(200, out)


OPERATIONS = {
    "StartSnapshot": start_snapshot,
    "PutSnapshotBlock": put_snapshot_block,
    "CompleteSnapshot": complete_snapshot,
    "ListSnapshotBlocks": list_snapshot_blocks,
    "GetSnapshotBlock": get_snapshot_block,
    "ListChangedBlocks": list_changed_blocks,
}
