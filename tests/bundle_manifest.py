#!/usr/bin/python3
"""bundle_manifest.py - writes an ec2-bundle-image manifest for parts made
by the shell pipeline ec2-bundle-image runs, independently of amiport.

  bundle_manifest.py --version 2007-10-10 --name NAME --user ACCOUNT \
      --size BYTES --digest SHA1HEX --key KHEX --iv VHEX \
      --user-cert USER_CERT.pem --ec2-cert EC2_CERT.pem --privatekey USER_KEY.pem \
      [--arch x86_64] [--kernel aki-...] [--ramdisk ari-...] \
      [--block-device-mapping ami=sda1,root=/dev/sda1] --out FILE PART...

The manifest is one line, as ec2-bundle-image writes it. The hex text of the
key and of the IV is encrypted (RSA PKCS#1 v1.5) under each certificate with
`openssl pkeyutl -encrypt -certin`; the signature is `openssl dgst -sha1
-sign` of <machine_configuration>...</machine_configuration><image>...</image>
as written (version 3 has no machine_configuration: then <image>...</image>
alone). Versions: 2007-10-10 (ec2-bundle-image's), 2007-08-29 and 3 (older
tools; same shape).
"""
import argparse
import hashlib
import os
import subprocess
import sys
from xml.sax.saxutils import escape


def openssl(args, data):
    p = subprocess.run(["openssl"] + args, input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit("bundle_manifest.py: openssl %s failed: %s" % (" ".join(args), p.stderr.decode(errors="replace")))
    return p.stdout


def rsa_encrypt_hex(cert, text):
    return openssl(["pkeyutl", "-encrypt", "-certin", "-inkey", cert,
                    "-pkeyopt", "rsa_padding_mode:pkcs1"], text.encode()).hex()


def sha1_file(path):
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", default="2007-10-10", choices=["2007-10-10", "2007-08-29", "3"])
    ap.add_argument("--name", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--size", required=True, type=int)
    ap.add_argument("--digest", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--iv", required=True)
    ap.add_argument("--user-cert", required=True)
    ap.add_argument("--ec2-cert", required=True)
    ap.add_argument("--privatekey", required=True)
    ap.add_argument("--arch", default="x86_64")
    ap.add_argument("--kernel")
    ap.add_argument("--ramdisk")
    ap.add_argument("--block-device-mapping")
    ap.add_argument("--out", required=True)
    ap.add_argument("parts", nargs="+")
    a = ap.parse_args()

    mc = ""
    if a.version != "3":
        mc = "<machine_configuration><architecture>%s</architecture>" % escape(a.arch)
        if a.block_device_mapping:
            mc += "<block_device_mapping>"
            for pair in a.block_device_mapping.split(","):
                virt, dev = pair.split("=", 1)
                mc += "<mapping><virtual>%s</virtual><device>%s</device></mapping>" % (escape(virt), escape(dev))
            mc += "</block_device_mapping>"
        if a.kernel:
            mc += "<kernel_id>%s</kernel_id>" % escape(a.kernel)
        if a.ramdisk:
            mc += "<ramdisk_id>%s</ramdisk_id>" % escape(a.ramdisk)
        mc += "</machine_configuration>"

    parts = ""
    bundled = 0
    for i, p in enumerate(a.parts):
        bundled += os.path.getsize(p)
        parts += '<part index="%d"><filename>%s</filename><digest algorithm="SHA1">%s</digest></part>' % (
            i, escape(os.path.basename(p)), sha1_file(p))
    image = ("<image><name>%s</name><user>%s</user><type>machine</type>"
             '<digest algorithm="SHA1">%s</digest><size>%d</size><bundled_size>%d</bundled_size>'
             '<ec2_encrypted_key algorithm="AES-128-CBC">%s</ec2_encrypted_key>'
             '<user_encrypted_key algorithm="AES-128-CBC">%s</user_encrypted_key>'
             "<ec2_encrypted_iv>%s</ec2_encrypted_iv><user_encrypted_iv>%s</user_encrypted_iv>"
             '<parts count="%d">%s</parts></image>') % (
        escape(a.name), escape(a.user), a.digest, a.size, bundled,
        rsa_encrypt_hex(a.ec2_cert, a.key), rsa_encrypt_hex(a.user_cert, a.key),
        rsa_encrypt_hex(a.ec2_cert, a.iv), rsa_encrypt_hex(a.user_cert, a.iv),
        len(a.parts), parts)
    signature = openssl(["dgst", "-sha1", "-sign", a.privatekey], (mc + image).encode()).hex()
    text = ("<?xml version='1.0'?><manifest><version>%s</version>"
            "<bundler><name>ec2-ami-tools</name><version>1.5.7</version><release>0</release></bundler>"
            "%s%s<signature>%s</signature></manifest>") % (a.version, mc, image, signature)
    with open(a.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
