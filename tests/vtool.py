# vtool.py - crafts and inspects VHD and VHDX files for amiport's tests.
import os, struct, sys, uuid

def crc32c(data):
    t = crc32c.table
    if t is None:
        t = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            t.append(c)
        crc32c.table = t
    c = 0xffffffff
    for b in data:
        c = (c >> 8) ^ t[(c ^ b) & 0xff]
    return c ^ 0xffffffff
crc32c.table = None

def vhdx_csum(buf, off):
    b = bytearray(buf); b[off:off+4] = b'\0\0\0\0'
    return crc32c(bytes(b))

def vhd_sum(buf, off):
    b = bytearray(buf); b[off:off+4] = b'\0\0\0\0'
    return (~sum(b)) & 0xffffffff

def rd(path, off, n):
    with open(path, 'rb') as f:
        f.seek(off); return f.read(n)

def wr(path, off, data):
    with open(path, 'r+b') as f:
        f.seek(off); f.write(data)

# ---- VHD ----
def vhd_refooter(path, off):
    f = bytearray(rd(path, off, 512))
    struct.pack_into('>I', f, 64, vhd_sum(f, 64)); wr(path, off, f)

def vhd_set_creator(path, app, current_size=None):
    size = os.path.getsize(path)
    offs = [size - 512] + ([0] if rd(path, 0, 8) == b'conectix' else [])
    for o in offs:
        f = bytearray(rd(path, o, 512))
        f[28:32] = app
        if current_size is not None:
            struct.pack_into('>Q', f, 48, current_size)
        struct.pack_into('>I', f, 64, vhd_sum(f, 64)); wr(path, o, f)

def vhd_make_diff(parent, child, locators, writes, parent_uuid=None, name=''):
    """locators: list of (code, text); writes: list of (offset, length, byte) in sectors."""
    pf = rd(parent, 0, 512)
    size = struct.unpack_from('>Q', pf, 48)[0]
    bs = 2 << 20
    n = (size + bs - 1) // bs
    bat_off = 1536 + 512 * len(locators)
    data0 = bat_off + (n * 4 + 511) // 512 * 512
    blocks = {}
    for (off, ln, byte) in writes:
        for s in range(off // 512, (off + ln) // 512):
            b = s * 512 // bs
            if b not in blocks:
                blocks[b] = [bytearray(512), bytearray(bs)]
            bm, d = blocks[b]
            i = (s * 512 % bs) // 512
            bm[i // 8] |= 0x80 >> (i % 8)
            d[i * 512:(i + 1) * 512] = bytes([byte]) * 512
    bat = [0xffffffff] * n
    out = bytearray(data0)
    at = data0
    for b in sorted(blocks):
        bat[b] = at // 512
        out += blocks[b][0] + blocks[b][1]
        at += 512 + bs
    foot = bytearray(pf)
    struct.pack_into('>I', foot, 60, 4)
    foot[68:84] = uuid.uuid4().bytes
    struct.pack_into('>I', foot, 64, vhd_sum(foot, 64))
    h = bytearray(1024)
    h[0:8] = b'cxsparse'
    struct.pack_into('>QQIII', h, 8, 0xffffffffffffffff, bat_off, 0x10000, n, bs)
    h[40:56] = parent_uuid if parent_uuid is not None else pf[68:84]
    pn = name.encode('utf-16-be')[:512]
    h[64:64 + len(pn)] = pn
    for i, (code, text) in enumerate(locators):
        raw = text.encode('utf-16-le') if code != b'MacX' else text.encode()
        struct.pack_into('>4sIIIQ', h, 576 + 24 * i, code, 1, len(raw), 0, 1536 + 512 * i)
        out[1536 + 512 * i:1536 + 512 * i + len(raw)] = raw
    struct.pack_into('>I', h, 36, vhd_sum(h, 36))
    out[0:512] = foot
    out[512:1536] = h
    for i, e in enumerate(bat):
        struct.pack_into('>I', out, bat_off + 4 * i, e)
    out += foot
    open(child, 'wb').write(out)

# ---- VHDX ----
def vhdx_parse(path):
    hs = [rd(path, 65536, 4096), rd(path, 131072, 4096)]
    ok = [h[0:4] == b'head' and struct.unpack_from('<I', h, 4)[0] == vhdx_csum(h, 4) for h in hs]
    cur = max([i for i in range(2) if ok[i]], key=lambda i: struct.unpack_from('<Q', hs[i], 8)[0])
    rt = rd(path, 196608, 65536)
    regions = {}
    for i in range(struct.unpack_from('<I', rt, 8)[0]):
        g, off, ln, req = struct.unpack_from('<16sQII', rt, 16 + 32 * i)
        regions[str(uuid.UUID(bytes_le=g)).upper()] = (off, ln)
    moff, mlen = regions['8B7CA206-4790-4B9A-B8FE-575F050F886E']
    boff, blen = regions['2DC27766-F623-4200-9D64-115E9BFD4A08']
    mt = rd(path, moff, 65536)
    items = {}
    for i in range(struct.unpack_from('<H', mt, 10)[0]):
        g, o, l, fl = struct.unpack_from('<16sIII', mt, 32 + 32 * i)
        items[str(uuid.UUID(bytes_le=g)).upper()] = (moff + o, l)
    bsz = struct.unpack_from('<I', rd(path, *items['CAA16737-FA36-4D43-B3B6-33F0AA44E76B']))[0]
    vsz = struct.unpack_from('<Q', rd(path, *items['2FA54224-CD1B-4876-B211-5DBED83BF4B8']))[0]
    lss = struct.unpack_from('<I', rd(path, *items['8141BF1D-A96F-4709-BA47-F233A8FAAB5F']))[0]
    ratio = (1 << 23) * lss // bsz
    nb = (vsz + bsz - 1) // bsz
    bat = [struct.unpack_from('<Q', rd(path, boff + 8 * (b + b // ratio), 8))[0] for b in range(nb)]
    return dict(header=cur, headers=hs, hoffs=[65536, 131072], regions=regions, meta=moff,
                items=items, block=bsz, size=vsz, lss=lss, ratio=ratio, bat=bat, bat_off=boff)

def vhdx_map(path):
    """[start, length, kind] with kind data (fully present) or zero, merged."""
    p = vhdx_parse(path)
    out = []
    for b, e in enumerate(p['bat']):
        kind = 'data' if e & 7 == 6 else 'zero'
        s, l = b * p['block'], min(p['block'], p['size'] - b * p['block'])
        if out and out[-1][2] == kind:
            out[-1][1] += l
        else:
            out.append([s, l, kind])
    return out

def vhdx_rehead(path, idx, mutate):
    off = [65536, 131072][idx]
    h = bytearray(rd(path, off, 4096))
    mutate(h)
    struct.pack_into('<I', h, 4, vhdx_csum(h, 4))
    wr(path, off, h)

def vhdx_log_entry(seq, tail, guid, descs, flushed, last, length=None):
    """descs: ('data', file_off, bytes4096) or ('zero', file_off, length)."""
    ndata = sum(1 for d in descs if d[0] == 'data')
    dsec = (64 + 32 * len(descs) + 4095) // 4096
    elen = length or (dsec + ndata) * 4096
    e = bytearray(elen)
    struct.pack_into('<4sIIIQII16sQQ', e, 0, b'loge', 0, elen, tail, seq, len(descs), 0, guid,
                     flushed, last)
    sec = dsec
    for i, d in enumerate(descs):
        o = 64 + 32 * i
        if d[0] == 'zero':
            struct.pack_into('<4sIQQQ', e, o, b'zero', 0, d[2], d[1], seq)
        else:
            page = d[2]
            e[o:o+4] = b'desc'
            e[o+4:o+8] = page[4092:4096]
            e[o+8:o+16] = page[0:8]
            struct.pack_into('<QQ', e, o + 16, d[1], seq)
            s = sec * 4096
            e[s:s+4] = b'data'
            struct.pack_into('<I', e, s + 4, seq >> 32)
            e[s+8:s+4092] = page[8:4092]
            struct.pack_into('<I', e, s + 4092, seq & 0xffffffff)
            sec += 1
    struct.pack_into('<I', e, 4, crc32c(bytes(e)))
    return bytes(e)

def vhdx_write_log(path, entries_at, guid):
    """entries_at: list of (log offset, entry bytes); sets LogGuid in the current header."""
    p = vhdx_parse(path)
    h = p['headers'][p['header']]
    loff = struct.unpack_from('<Q', h, 72)[0]
    llen = struct.unpack_from('<I', h, 68)[0]
    wr(path, loff, bytes(llen))
    for at, ent in entries_at:
        wr(path, loff + at, ent)
    def mut(b):
        b[48:64] = guid
    vhdx_rehead(path, p['header'], mut)

def vhdx_fix_table(path, off, size, mutate):
    t = bytearray(rd(path, off, size))
    mutate(t)
    struct.pack_into('<I', t, 4, vhdx_csum(t, 4))
    wr(path, off, t)

if __name__ == '__main__':
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == 'vhdx-map':
        import json
        print(json.dumps(vhdx_map(args[0])))
    else:
        exec(cmd)
