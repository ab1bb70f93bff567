"""A few calls of the EC2 Query API (form-encoded requests, XML answers),
with the member names of botocore's ec2/2016-11-15/service-2.json:
DescribeSnapshots, RegisterImage, DescribeImages, DescribeImageAttribute,
CreateTags, DeregisterImage, DeleteSnapshot.

Each action takes (store, params) where params is the parameter tree of the
request ("BlockDeviceMapping.1.Ebs.SnapshotId" -> nested dicts) and returns
the inner XML of the answer, or raises Ec2Error.
"""

import base64
import binascii
import fnmatch
import re
import time
import uuid
from xml.sax.saxutils import escape

from state import ACCOUNT, new_id

XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"

STATUS = {
    "AuthFailure": 401,
    "SignatureDoesNotMatch": 403,
    "IncompleteSignature": 400,
    "MissingAuthenticationToken": 401,
    "RequestExpired": 400,
    "ExpiredToken": 400,
    "UnauthorizedOperation": 403,
    "DryRunOperation": 412,
    "RequestLimitExceeded": 503,
    "InternalError": 500,
    "Unavailable": 503,
}

_SNAP_RE = re.compile(r"^snap-([0-9a-f]{8}|[0-9a-f]{17})$")
_AMI_RE = re.compile(r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$")
_AMI_NAME_RE = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")
_DEVICE_RE = re.compile(r"^(/dev/)?[a-z][a-z0-9]*$")
# BUCKET/KEY.manifest.xml: where an instance-store image's bundle manifest is in S3
_BILLING_PRODUCT_RE = re.compile(r"^bp-[0-9a-f]{8}$")
_PRODUCT_CODE_RE = re.compile(r"^[A-Za-z0-9]{1,25}$")
UEFI_DATA_MAX = 64000   # RegisterImage UefiData: botocore's StringType max
_IMAGE_LOCATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{2,254}/(?:[^/\s]+/)*[^/\s]+\.manifest\.xml$")


class Ec2Error(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def error_response(code, message):
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>%s</Code>'
            '<Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>'
            % (escape(code), escape(message), uuid.uuid4())).encode()
    return STATUS.get(code, 400), [("Content-Type", "text/xml;charset=UTF-8")], body


def success_response(action, inner):
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<%sResponse xmlns="%s">\n'
            '    <requestId>%s</requestId>\n%s</%sResponse>'
            % (action, XMLNS, uuid.uuid4(), inner, action)).encode()
    return 200, [("Content-Type", "text/xml;charset=UTF-8")], body


# --- parameters --------------------------------------------------------------

def parse_tree(pairs):
    root = {}
    for key, value in pairs:
        parts = key.split(".")
        node = root
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise Ec2Error("InvalidParameterValue", "The parameter %s is given both as a value and a list" % key)
            node = nxt
        if isinstance(node.get(parts[-1]), dict):
            raise Ec2Error("InvalidParameterValue", "The parameter %s is given both as a value and a list" % key)
        node[parts[-1]] = value
    return root


def _list(node, name):
    """A flattened list (Name.1, Name.2, ...) as a Python list, in index order."""
    if node is None:
        return []
    if not isinstance(node, dict):
        raise Ec2Error("InvalidParameterValue", "The parameter %s must be a list (%s.1, %s.2, ...)" % (name, name, name))
    out = []
    for k, v in node.items():
        if not k.isdigit() or int(k) < 1:
            raise Ec2Error("UnknownParameter", "The parameter %s.%s is not recognized" % (name, k))
        out.append((int(k), v))
    return [v for _, v in sorted(out)]


def _check_known(tree, allowed, prefix=""):
    """allowed: name -> None (a value) or a dict of sub-names (a structure,
    or a list of structures when the key is given as 'Name[]')."""
    for k, v in tree.items():
        spec_key = k if k in allowed else (k + "[]" if k + "[]" in allowed else None)
        if spec_key is None:
            raise Ec2Error("UnknownParameter", "The parameter %s%s is not recognized" % (prefix, k))
        spec = allowed[spec_key]
        if spec_key.endswith("[]"):
            for i, item in enumerate(_list(v, prefix + k)):
                if spec is None:
                    if isinstance(item, dict):
                        raise Ec2Error("UnknownParameter", "The parameter %s%s.%d.* is not recognized" % (prefix, k, i + 1))
                elif not isinstance(item, dict):
                    raise Ec2Error("InvalidParameterValue", "The parameter %s%s.N must be a structure" % (prefix, k))
                else:
                    _check_known(item, spec, "%s%s.N." % (prefix, k))
        elif spec is None:
            if isinstance(v, dict):
                raise Ec2Error("UnknownParameter", "The parameter %s%s.%s is not recognized" % (prefix, k, next(iter(v))))
        else:
            if not isinstance(v, dict):
                raise Ec2Error("InvalidParameterValue", "The parameter %s%s must be a structure" % (prefix, k))
            _check_known(v, spec, prefix + k + ".")


def _bool(value, name):
    if value is None:
        return None
    lv = value.lower()
    if lv in ("true", "false"):
        return lv == "true"
    raise Ec2Error("InvalidParameterValue", "Value (%s) for parameter %s is invalid. Expected: 'true' or 'false'."
                   % (value, name))


def _int(value, name, lo=None, hi=None):
    if value is None:
        return None
    if not re.match(r"^-?[0-9]+$", value):
        raise Ec2Error("InvalidParameterValue", "Value (%s) for parameter %s is invalid. Expected an integer."
                       % (value, name))
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise Ec2Error("InvalidParameterValue", "Value (%d) for parameter %s is out of range" % (v, name))
    return v


def _enum(value, name, allowed):
    if value is not None and value not in allowed:
        raise Ec2Error("InvalidParameterValue", "Value (%s) for parameter %s is invalid. Valid values: %s"
                       % (value, name, ", ".join(allowed)))
    return value


def _tags(node, name):
    tags = []
    for t in _list(node, name):
        if not isinstance(t, dict):
            raise Ec2Error("InvalidParameterValue", "%s.N must have a Key and a Value" % name)
        key = t.get("Key")
        if key is None or key == "":
            raise Ec2Error("InvalidParameterValue", "Tag key must not be empty (%s.N.Key)" % name)
        if len(key) > 128 or len(t.get("Value", "")) > 256:
            raise Ec2Error("InvalidParameterValue", "Tag key %r or its value is too long" % key)
        if key.lower().startswith("aws:"):
            raise Ec2Error("InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
        tags.append({"Key": key, "Value": t.get("Value", "")})
    return tags


def _merge_tags(old, new):
    out = list(old or [])
    for t in new:
        for o in out:
            if o["Key"] == t["Key"]:
                o["Value"] = t["Value"]
                break
        else:
            out.append(dict(t))
    if len(out) > 50:
        raise Ec2Error("TagLimitExceeded", "The maximum number of tags per resource (50) would be exceeded")
    return out


def _filters(node):
    out = []
    for f in _list(node, "Filter"):
        if not isinstance(f, dict) or "Name" not in f:
            raise Ec2Error("InvalidParameterValue", "Each Filter.N needs a Name")
        out.append((f["Name"], _list(f.get("Value"), "Filter.N.Value")))
    return out


def _match_filters(filters, fields, tags, what):
    for name, values in filters:
        if name.startswith("tag:"):
            got = [t["Value"] for t in tags or [] if t["Key"] == name[4:]]
        elif name == "tag-key":
            got = [t["Key"] for t in tags or []]
        elif name in fields:
            v = fields[name]
            vs = v if isinstance(v, list) else [] if v is None else [v]
            got = ["true" if x is True else "false" if x is False else str(x) for x in vs]
        else:
            raise Ec2Error("InvalidParameterValue", "The filter '%s' is invalid for %s" % (name, what))
        if not any(fnmatch.fnmatchcase(g, pat) for g in got for pat in values):
            return False
    return True


def _owners_match(owners):
    return not owners or any(o in ("self", ACCOUNT) for o in owners)


def _dry_run(params, action):
    if _bool(params.get("DryRun"), "DryRun"):
        raise Ec2Error("DryRunOperation", "Request would have succeeded, but DryRun flag is set.")


def _iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


def _x(name, value, ind):
    if value is None:
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return "%s<%s>%s</%s>\n" % (" " * ind, name, escape(str(value)), name)


def _tagset(tags, ind):
    if not tags:
        return ""
    s = " " * ind + "<tagSet>\n"
    for t in tags:
        s += " " * (ind + 2) + "<item>\n" + _x("key", t["Key"], ind + 4) + _x("value", t["Value"], ind + 4) \
            + " " * (ind + 2) + "</item>\n"
    return s + " " * ind + "</tagSet>\n"


def _check_snapshot_id(sid):
    if not _SNAP_RE.match(sid or ""):
        raise Ec2Error("InvalidSnapshotID.Malformed", 'Invalid id: "%s" (expecting "snap-...")' % sid)


def _check_image_id(iid):
    if not _AMI_RE.match(iid or ""):
        raise Ec2Error("InvalidAMIID.Malformed", 'Invalid id: "%s" (expecting "ami-...")' % iid)


def _snapshot(store, sid):
    _check_snapshot_id(sid)
    s = store.get(sid)
    if s is None:
        raise Ec2Error("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist." % sid)
    return s


def _image(store, iid):
    _check_image_id(iid)
    img = store.images.get(iid)
    if img is None:
        raise Ec2Error("InvalidAMIID.NotFound", "The image id '[%s]' does not exist" % iid)
    return img


# --- actions -----------------------------------------------------------------

FILTER = {"Name": None, "Value[]": None}
TAG = {"Key": None, "Value": None}

ALLOWED = {
    "DescribeSnapshots": {"SnapshotId[]": None, "Owner[]": None, "RestorableBy[]": None, "Filter[]": FILTER,
                          "MaxResults": None, "NextToken": None, "DryRun": None},
    "RegisterImage": {
        "ImageLocation": None, "Architecture": None, "Description": None, "DryRun": None, "EnaSupport": None,
        "KernelId": None, "Name": None, "BillingProduct[]": None, "RamdiskId": None, "RootDeviceName": None,
        "SriovNetSupport": None, "VirtualizationType": None, "BootMode": None, "TpmSupport": None,
        "UefiData": None, "ImdsSupport": None,
        "BlockDeviceMapping[]": {"DeviceName": None, "VirtualName": None, "NoDevice": None,
                                 "Ebs": {"DeleteOnTermination": None, "Iops": None, "SnapshotId": None,
                                         "VolumeSize": None, "VolumeType": None, "KmsKeyId": None,
                                         "Throughput": None, "OutpostArn": None, "Encrypted": None}},
        "TagSpecification[]": {"ResourceType": None, "Tag[]": TAG},
    },
    "DescribeImages": {"ExecutableBy[]": None, "Filter[]": FILTER, "ImageId[]": None, "Owner[]": None,
                       "IncludeDeprecated": None, "DryRun": None, "MaxResults": None, "NextToken": None},
    "DescribeImageAttribute": {"ImageId": None, "Attribute": None, "DryRun": None},
    "CreateTags": {"ResourceId[]": None, "Tag[]": TAG, "DryRun": None},
    "DeregisterImage": {"ImageId": None, "DryRun": None},
    "DeleteSnapshot": {"SnapshotId": None, "DryRun": None},
}


def describe_snapshots(store, p):
    _dry_run(p, "DescribeSnapshots")
    ids = _list(p.get("SnapshotId"), "SnapshotId")
    owners = _list(p.get("Owner"), "Owner")
    filters = _filters(p.get("Filter"))
    for sid in ids:
        _check_snapshot_id(sid)
    out = ""
    with store.lock:
        if ids:
            snaps = []
            for sid in ids:
                s = store.get(sid)
                if s is None:
                    raise Ec2Error("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist." % sid)
                if s not in snaps:
                    snaps.append(s)
        else:
            snaps = sorted(store.visible_snapshots(), key=lambda s: s.meta["StartTime"])
        for s in snaps:
            st = s.status()
            m = s.meta
            if not _owners_match(owners):
                continue
            fields = {"snapshot-id": s.id, "status": st, "owner-id": ACCOUNT, "volume-size": m["VolumeSize"],
                      "description": m.get("Description") or "", "encrypted": bool(m.get("Encrypted")),
                      "volume-id": "vol-ffffffff", "progress": "%d%%" % m.get("Progress", 0),
                      "storage-tier": "standard"}
            if not _match_filters(filters, fields, m.get("Tags"), "DescribeSnapshots"):
                continue
            progress = 100 if st == "completed" else m.get("Progress", 0)
            out += "        <item>\n"
            out += _x("snapshotId", s.id, 12) + _x("volumeId", "vol-ffffffff", 12) + _x("status", st, 12)
            if st == "error" and m.get("StatusMessage"):
                out += _x("statusMessage", m["StatusMessage"], 12)
            out += _x("startTime", _iso(m["StartTime"]), 12) + _x("progress", "%d%%" % progress, 12)
            out += _x("ownerId", ACCOUNT, 12) + _x("volumeSize", m["VolumeSize"], 12)
            out += _x("description", m.get("Description") or "", 12)
            out += _x("encrypted", bool(m.get("Encrypted")), 12)
            if m.get("Encrypted"):
                out += _x("kmsKeyId", m.get("KmsKeyArn"), 12)
            out += _x("storageTier", "standard", 12) + _tagset(m.get("Tags"), 12)
            out += "        </item>\n"
    return "    <snapshotSet>\n" + out + "    </snapshotSet>\n"


def _device_key(name):
    return name[5:] if name.startswith("/dev/") else name


def register_image(store, p):
    _dry_run(p, "RegisterImage")
    name = p.get("Name")
    if name is None:
        raise Ec2Error("MissingParameter", "The request must contain the parameter name")
    if not _AMI_NAME_RE.match(name):
        raise Ec2Error("InvalidAMIName.Malformed",
                       "AMI names must be between 3 and 128 characters long, and may contain letters, numbers, "
                       "'(', ')', '.', '-', '/' and '_'")
    desc = p.get("Description")
    if desc is not None and len(desc) > 255:
        raise Ec2Error("InvalidParameterValue", "The description may be at most 255 characters long")
    arch = _enum(p.get("Architecture"), "architecture",
                 ["i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac"]) or "x86_64"
    virt = _enum(p.get("VirtualizationType"), "virtualizationType", ["hvm", "paravirtual"]) or "paravirtual"
    boot = _enum(p.get("BootMode"), "BootMode", ["legacy-bios", "uefi", "uefi-preferred"])
    ena = _bool(p.get("EnaSupport"), "enaSupport")
    sriov = _enum(p.get("SriovNetSupport"), "sriovNetSupport", ["simple"])
    imds = _enum(p.get("ImdsSupport"), "ImdsSupport", ["v2.0"])
    tpm = _enum(p.get("TpmSupport"), "TpmSupport", ["v2.0"])
    if arch.startswith("arm64") and virt != "hvm":
        raise Ec2Error("InvalidParameterCombination", "arm64 images must use the hvm virtualization type")
    if arch.startswith("arm64") and boot == "legacy-bios":
        raise Ec2Error("InvalidParameterCombination", "The boot mode legacy-bios is not supported for arm64 images")
    if tpm and boot not in ("uefi", "uefi-preferred"):
        raise Ec2Error("InvalidParameterCombination", "NitroTPM (TpmSupport v2.0) requires the uefi boot mode")
    uefi = p.get("UefiData")
    if uefi is not None:
        if boot not in ("uefi", "uefi-preferred"):
            raise Ec2Error("InvalidParameterCombination", "UefiData requires the uefi boot mode")
        if len(uefi) > UEFI_DATA_MAX:
            raise Ec2Error("InvalidParameterValue", "UefiData is %d characters long; at most %d are allowed"
                           % (len(uefi), UEFI_DATA_MAX))
        try:
            base64.b64decode(uefi.encode(), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise Ec2Error("InvalidParameterValue", "UefiData is not base64")
    billing = _list(p.get("BillingProduct"), "BillingProduct")
    for bp in billing:
        if not isinstance(bp, str) or not _BILLING_PRODUCT_RE.match(bp):
            raise Ec2Error("InvalidParameterValue", "Invalid billing product code %r (expecting bp-xxxxxxxx)" % (bp,))
    location = p.get("ImageLocation")
    root = p.get("RootDeviceName")
    if location is not None and not _IMAGE_LOCATION_RE.match(location):
        raise Ec2Error("InvalidParameterValue", "Invalid value '%s' for ImageLocation: it must be "
                       "BUCKET/KEY.manifest.xml, a bundle manifest in Amazon S3" % location)

    tag_specs = []
    for ts in _list(p.get("TagSpecification"), "TagSpecification"):
        rt = ts.get("ResourceType")
        if rt not in ("image", "snapshot"):
            raise Ec2Error("InvalidParameterValue",
                           "'%s' is not a valid taggable resource type for this operation." % rt)
        tag_specs.append((rt, _tags(ts.get("Tag"), "TagSpecification.N.Tag")))

    with store.lock:
        for img in store.images.values():
            if img["Name"] == name:
                raise Ec2Error("InvalidAMIName.Duplicate", "AMI name %s is already in use by AMI %s"
                               % (name, img["ImageId"]))
        mappings = []
        seen = set()
        used_snaps = []
        for n, bdm in enumerate(_list(p.get("BlockDeviceMapping"), "BlockDeviceMapping"), 1):
            dev = bdm.get("DeviceName")
            if not dev:
                raise Ec2Error("MissingParameter", "The request must contain the parameter "
                               "BlockDeviceMapping.%d.DeviceName" % n)
            if not _DEVICE_RE.match(dev):
                raise Ec2Error("InvalidBlockDeviceMapping", "Invalid device name %s" % dev)
            if _device_key(dev) in seen:
                raise Ec2Error("InvalidBlockDeviceMapping", "The device name %s is used more than once" % dev)
            seen.add(_device_key(dev))
            kinds = [k for k in ("Ebs", "VirtualName", "NoDevice") if k in bdm]
            if len(kinds) != 1:
                raise Ec2Error("InvalidBlockDeviceMapping",
                               "BlockDeviceMapping.%d must have exactly one of Ebs, VirtualName and NoDevice" % n)
            m = {"DeviceName": dev}
            if "VirtualName" in bdm:
                if not re.match(r"^ephemeral[0-9]+$", bdm["VirtualName"]):
                    raise Ec2Error("InvalidBlockDeviceMapping", "Invalid virtual name %s" % bdm["VirtualName"])
                m["VirtualName"] = bdm["VirtualName"]
            elif "NoDevice" in bdm:
                m["NoDevice"] = ""
            else:
                e = bdm["Ebs"]
                ebs = {}
                sid = e.get("SnapshotId")
                size = _int(e.get("VolumeSize"), "BlockDeviceMapping.%d.Ebs.VolumeSize" % n, 1, 65536)
                vtype = _enum(e.get("VolumeType"), "BlockDeviceMapping.%d.Ebs.VolumeType" % n,
                              ["standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"]) or "gp2"
                enc = _bool(e.get("Encrypted"), "BlockDeviceMapping.%d.Ebs.Encrypted" % n)
                if sid:
                    s = _snapshot(store, sid)
                    st = s.status()
                    if st != "completed":
                        raise Ec2Error("IncorrectState", "Snapshot %s is in state '%s'; only a completed snapshot "
                                       "can be registered." % (sid, st))
                    if size is None:
                        size = s.meta["VolumeSize"]
                    if size < s.meta["VolumeSize"]:
                        raise Ec2Error("InvalidBlockDeviceMapping",
                                       "Volume of size %dGB is smaller than snapshot '%s', expect size >= %dGB"
                                       % (size, sid, s.meta["VolumeSize"]))
                    if s.meta.get("Encrypted"):
                        if enc is False:
                            raise Ec2Error("InvalidBlockDeviceMapping",
                                           "The snapshot %s is encrypted; the volume cannot be unencrypted" % sid)
                        enc = True
                    ebs["SnapshotId"] = sid
                    used_snaps.append(s)
                elif size is None:
                    raise Ec2Error("InvalidBlockDeviceMapping",
                                   "BlockDeviceMapping.%d.Ebs needs a SnapshotId or a VolumeSize" % n)
                ebs["VolumeSize"] = size
                ebs["VolumeType"] = vtype
                dot = _bool(e.get("DeleteOnTermination"), "BlockDeviceMapping.%d.Ebs.DeleteOnTermination" % n)
                ebs["DeleteOnTermination"] = True if dot is None else dot
                ebs["Encrypted"] = bool(enc)
                iops = _int(e.get("Iops"), "BlockDeviceMapping.%d.Ebs.Iops" % n, 100, 256000)
                if iops is not None:
                    if vtype not in ("io1", "io2", "gp3"):
                        raise Ec2Error("InvalidParameterCombination", "Iops is only valid for io1, io2 and gp3 volumes")
                    ebs["Iops"] = iops
                thr = _int(e.get("Throughput"), "BlockDeviceMapping.%d.Ebs.Throughput" % n, 125, 1000)
                if thr is not None:
                    if vtype != "gp3":
                        raise Ec2Error("InvalidParameterCombination", "Throughput is only valid for gp3 volumes")
                    ebs["Throughput"] = thr
                if e.get("KmsKeyId"):
                    ebs["KmsKeyId"] = e["KmsKeyId"]
                m["Ebs"] = ebs
            mappings.append(m)
        if location is None:
            if not root:
                raise Ec2Error("MissingParameter", "The request must contain the parameter RootDeviceName "
                               "(or ImageLocation for an instance-store image)")
            rootmap = [m for m in mappings if _device_key(m["DeviceName"]) == _device_key(root)]
            if not rootmap:
                raise Ec2Error("InvalidBlockDeviceMapping",
                               "The root device name %s does not appear in the block device mapping" % root)
            if "SnapshotId" not in rootmap[0].get("Ebs", {}):
                raise Ec2Error("InvalidBlockDeviceMapping",
                               "The root device %s must be an EBS volume made from a snapshot" % root)
            root_type = "ebs"
        else:
            # an instance-store image: the service names the root device, which
            # is the bundle's, never an EBS volume
            root = root or "/dev/sda1"
            for m in mappings:
                if _device_key(m["DeviceName"]) == _device_key(root) and "Ebs" in m:
                    raise Ec2Error("InvalidParameterCombination",
                                   "ImageLocation registers an instance-store image; its root device %s "
                                   "cannot be mapped to an EBS volume" % root)
            root_type = "instance-store"
        iid = new_id("ami-")
        img = {
            "ImageId": iid, "Name": name, "Description": desc, "Architecture": arch,
            "VirtualizationType": virt, "BootMode": boot, "EnaSupport": ena, "SriovNetSupport": sriov,
            "ImdsSupport": imds, "TpmSupport": tpm, "RootDeviceName": root, "RootDeviceType": root_type,
            "ImageLocation": location or "%s/%s" % (ACCOUNT, name), "BlockDeviceMappings": mappings,
            "KernelId": p.get("KernelId"), "RamdiskId": p.get("RamdiskId"),
            "CreationDate": _iso(time.time()), "State": "available", "Tags": [],
            "UefiData": uefi or None, "BillingProducts": billing, "ProductCodes": [],
            "Platform": None, "PlatformDetails": "Linux/UNIX", "UsageOperation": "RunInstances",
        }
        for rt, tags in tag_specs:
            if rt == "image":
                img["Tags"] = _merge_tags(img["Tags"], tags)
            else:
                for s in used_snaps:
                    s.meta["Tags"] = _merge_tags(s.meta.get("Tags"), tags)
                    s.save()
        store.images[iid] = img
        store.save_images()
    return _x("imageId", iid, 4)


def describe_images(store, p):
    _dry_run(p, "DescribeImages")
    ids = _list(p.get("ImageId"), "ImageId")
    owners = _list(p.get("Owner"), "Owner")
    filters = _filters(p.get("Filter"))
    for iid in ids:
        _check_image_id(iid)
    out = ""
    with store.lock:
        if ids:
            imgs = []
            for iid in ids:
                img = store.images.get(iid)
                if img is None:
                    raise Ec2Error("InvalidAMIID.NotFound", "The image id '[%s]' does not exist" % iid)
                if img not in imgs:
                    imgs.append(img)
        else:
            imgs = sorted(store.images.values(), key=lambda i: i["CreationDate"])
        for img in imgs:
            if not _owners_match(owners):
                continue
            fields = {"image-id": img["ImageId"], "name": img["Name"], "state": img["State"],
                      "architecture": img["Architecture"], "owner-id": ACCOUNT,
                      "root-device-type": img["RootDeviceType"], "description": img.get("Description"),
                      "virtualization-type": img["VirtualizationType"], "boot-mode": img.get("BootMode"),
                      "image-type": "machine", "is-public": False, "platform": img.get("Platform"),
                      "block-device-mapping.snapshot-id":
                          [m["Ebs"]["SnapshotId"] for m in img["BlockDeviceMappings"]
                           if m.get("Ebs", {}).get("SnapshotId")],
                      "block-device-mapping.device-name": [m["DeviceName"] for m in img["BlockDeviceMappings"]],
                      "product-code": [c["ProductCodeId"] for c in img.get("ProductCodes") or []]}
            if not _match_filters(filters, fields, img.get("Tags"), "DescribeImages"):
                continue
            i = 12
            s = "        <item>\n"
            s += _x("imageId", img["ImageId"], i) + _x("imageLocation", img["ImageLocation"], i)
            s += _x("imageState", img["State"], i) + _x("imageOwnerId", ACCOUNT, i)
            s += _x("creationDate", img["CreationDate"], i) + _x("isPublic", False, i)
            s += _x("architecture", img["Architecture"], i) + _x("imageType", "machine", i)
            s += _x("kernelId", img.get("KernelId"), i) + _x("ramdiskId", img.get("RamdiskId"), i)
            s += _x("platform", img.get("Platform"), i)
            s += _x("platformDetails", img.get("PlatformDetails", "Linux/UNIX"), i)
            s += _x("usageOperation", img.get("UsageOperation", "RunInstances"), i)
            s += _product_codes(img.get("ProductCodes"), i)
            # not in EC2's Image shape (see the README): the billing products
            # RegisterImage was given, for clients that test them
            if img.get("BillingProducts"):
                s += " " * i + "<billingProducts>\n"
                for bp in img["BillingProducts"]:
                    s += _x("item", bp, i + 2)
                s += " " * i + "</billingProducts>\n"
            s += _x("name", img["Name"], i) + _x("description", img.get("Description"), i)
            s += _x("rootDeviceType", img["RootDeviceType"], i) + _x("rootDeviceName", img.get("RootDeviceName"), i)
            s += " " * i + "<blockDeviceMapping>\n"
            for m in img["BlockDeviceMappings"]:
                s += " " * (i + 2) + "<item>\n" + _x("deviceName", m["DeviceName"], i + 4)
                s += _x("virtualName", m.get("VirtualName"), i + 4)
                if "NoDevice" in m:
                    s += _x("noDevice", "", i + 4)
                if "Ebs" in m:
                    e = m["Ebs"]
                    s += " " * (i + 4) + "<ebs>\n"
                    for k, tag in (("SnapshotId", "snapshotId"), ("VolumeSize", "volumeSize"),
                                   ("DeleteOnTermination", "deleteOnTermination"), ("VolumeType", "volumeType"),
                                   ("Iops", "iops"), ("Throughput", "throughput"), ("Encrypted", "encrypted"),
                                   ("KmsKeyId", "kmsKeyId")):
                        s += _x(tag, e.get(k), i + 6)
                    s += " " * (i + 4) + "</ebs>\n"
                s += " " * (i + 2) + "</item>\n"
            s += " " * i + "</blockDeviceMapping>\n"
            s += _x("virtualizationType", img["VirtualizationType"], i) + _x("hypervisor", "xen", i)
            s += _x("enaSupport", img.get("EnaSupport"), i) + _x("sriovNetSupport", img.get("SriovNetSupport"), i)
            s += _x("bootMode", img.get("BootMode"), i) + _x("tpmSupport", img.get("TpmSupport"), i)
            s += _x("imdsSupport", img.get("ImdsSupport"), i) + _tagset(img.get("Tags"), i)
            s += "        </item>\n"
            out += s
    return "    <imagesSet>\n" + out + "    </imagesSet>\n"


def _product_codes(codes, ind):
    if not codes:
        return ""
    s = " " * ind + "<productCodes>\n"
    for c in codes:
        s += " " * (ind + 2) + "<item>\n" + _x("productCode", c["ProductCodeId"], ind + 4) \
            + _x("type", c.get("ProductCodeType", "marketplace"), ind + 4) + " " * (ind + 2) + "</item>\n"
    return s + " " * ind + "</productCodes>\n"


IMAGE_ATTRIBUTES = ["description", "kernel", "ramdisk", "launchPermission", "productCodes",
                    "blockDeviceMapping", "sriovNetSupport", "bootMode", "tpmSupport", "uefiData",
                    "lastLaunchedTime", "imdsSupport"]


def describe_image_attribute(store, p):
    _dry_run(p, "DescribeImageAttribute")
    iid = p.get("ImageId")
    if not iid:
        raise Ec2Error("MissingParameter", "The request must contain the parameter ImageId")
    attr = p.get("Attribute")
    if not attr:
        raise Ec2Error("MissingParameter", "The request must contain the parameter Attribute")
    _enum(attr, "Attribute", IMAGE_ATTRIBUTES)
    if attr == "blockDeviceMapping":
        # as the API reference says: this attribute is refused; DescribeImages has the mappings
        raise Ec2Error("AuthFailure", "Unauthorized attempt to access restricted resource")
    with store.lock:
        img = _image(store, iid)
        out = _x("imageId", iid, 4)
        value = {"description": img.get("Description"), "kernel": img.get("KernelId"),
                 "ramdisk": img.get("RamdiskId"), "sriovNetSupport": img.get("SriovNetSupport"),
                 "bootMode": img.get("BootMode"), "tpmSupport": img.get("TpmSupport"),
                 "uefiData": img.get("UefiData"), "imdsSupport": img.get("ImdsSupport"),
                 "lastLaunchedTime": None}
        if attr == "productCodes":
            out += _product_codes(img.get("ProductCodes"), 4) or "    <productCodes/>\n"
        elif attr == "launchPermission":
            out += "    <launchPermission/>\n"
        elif value.get(attr) is not None:
            out += "    <%s>\n%s    </%s>\n" % (attr, _x("value", value[attr], 6), attr)
        else:
            out += "    <%s/>\n" % attr
    return out


PLATFORMS = {"windows": ("Windows", "RunInstances:0002")}


def set_billing(store, iid, body):
    """Control API (emulator only): sets what the real service derives from
    billing codes, as an AMI from AWS Marketplace or a Windows AMI has them.
    body: {"Platform": "windows"|null, "PlatformDetails", "UsageOperation",
    "ProductCodes": [{"ProductCodeId", "ProductCodeType"}]}; returns the image's
    new values, or raises ValueError."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    unknown = set(body) - {"Platform", "PlatformDetails", "UsageOperation", "ProductCodes"}
    if unknown:
        raise ValueError("unknown keys %s" % sorted(unknown))
    with store.lock:
        img = store.images.get(iid)
        if img is None:
            raise KeyError(iid)
        if "Platform" in body:
            plat = body["Platform"]
            if plat not in (None, "windows"):
                raise ValueError("Platform must be windows or null")
            img["Platform"] = plat
            details, op = PLATFORMS.get(plat, ("Linux/UNIX", "RunInstances"))
            img["PlatformDetails"], img["UsageOperation"] = details, op
        for k in ("PlatformDetails", "UsageOperation"):
            if k in body:
                if not isinstance(body[k], str) or not body[k]:
                    raise ValueError("%s must be a non-empty string" % k)
                img[k] = body[k]
        if "ProductCodes" in body:
            codes = []
            for c in body["ProductCodes"] or []:
                if not isinstance(c, dict) or not _PRODUCT_CODE_RE.match(str(c.get("ProductCodeId", ""))) \
                        or c.get("ProductCodeType", "marketplace") not in ("marketplace", "devpay"):
                    raise ValueError("each product code is {ProductCodeId: 1-25 letters and digits, "
                                     "ProductCodeType: marketplace|devpay}")
                codes.append({"ProductCodeId": c["ProductCodeId"],
                              "ProductCodeType": c.get("ProductCodeType", "marketplace")})
            img["ProductCodes"] = codes
        store.save_images()
        return {k: img.get(k) for k in ("ImageId", "Platform", "PlatformDetails", "UsageOperation",
                                        "ProductCodes", "BillingProducts")}


def create_tags(store, p):
    _dry_run(p, "CreateTags")
    ids = _list(p.get("ResourceId"), "ResourceId")
    if not ids:
        raise Ec2Error("MissingParameter", "The request must contain the parameter resourceIdSet")
    tags = _tags(p.get("Tag"), "Tag")
    if not tags:
        raise Ec2Error("MissingParameter", "The request must contain the parameter tagSet")
    with store.lock:
        targets = []
        for rid in ids:
            if rid.startswith("snap-"):
                targets.append(("snap", _snapshot(store, rid)))
            elif rid.startswith("ami-"):
                targets.append(("ami", _image(store, rid)))
            else:
                raise Ec2Error("InvalidID", "The ID '%s' is not valid" % rid)
        for kind, t in targets:
            if kind == "snap":
                t.meta["Tags"] = _merge_tags(t.meta.get("Tags"), tags)
                t.save()
            else:
                t["Tags"] = _merge_tags(t.get("Tags"), tags)
        if any(k == "ami" for k, _ in targets):
            store.save_images()
    return _x("return", True, 4)


def deregister_image(store, p):
    _dry_run(p, "DeregisterImage")
    iid = p.get("ImageId")
    if not iid:
        raise Ec2Error("MissingParameter", "The request must contain the parameter ImageId")
    with store.lock:
        _image(store, iid)
        del store.images[iid]
        store.save_images()
    return _x("return", True, 4)


def delete_snapshot(store, p):
    _dry_run(p, "DeleteSnapshot")
    sid = p.get("SnapshotId")
    if not sid:
        raise Ec2Error("MissingParameter", "The request must contain the parameter SnapshotId")
    with store.lock:
        s = _snapshot(store, sid)
        for img in store.images.values():
            for m in img["BlockDeviceMappings"]:
                if m.get("Ebs", {}).get("SnapshotId") == sid:
                    raise Ec2Error("InvalidSnapshot.InUse", "The snapshot %s is currently in use by %s"
                                   % (sid, img["ImageId"]))
        store.delete_snapshot(s)
    return _x("return", True, 4)


ACTIONS = {
    "DescribeSnapshots": describe_snapshots,
    "RegisterImage": register_image,
    "DescribeImages": describe_images,
    "DescribeImageAttribute": describe_image_attribute,
    "CreateTags": create_tags,
    "DeregisterImage": deregister_image,
    "DeleteSnapshot": delete_snapshot,
}


def run(store, action, pairs):
    """Runs one action; returns (status, headers, body)."""
    if action not in ACTIONS:
        raise Ec2Error("InvalidAction", "The action %s is not valid for this web service." % action)
    tree = parse_tree(pairs)
    if "Version" not in tree:
        raise Ec2Error("MissingParameter", "The request must contain the parameter Version")
    params = {k: v for k, v in tree.items() if k not in ("Action", "Version")}
    _check_known(params, ALLOWED[action])
    return success_response(action, ACTIONS[action](store, params))
