#!/usr/bin/env python3
"""drover-img against the real qemu-img, both ways.

Images drover-img writes must pass `qemu-img check` and `qemu-img compare`
with the data they should hold; images qemu-img (and qemu-io) write must
read back the same through drover-img (info, map, compare, check). Bad input
must give one "drover-img: ..." line and qemu-img's exit status.

usage: test_img.py --drover-img PATH [unittest arguments, e.g. a class name]
Needs qemu-img and qemu-io (Debian: qemu-utils).
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest

DROVER_IMG = None
KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024


def run(cmd, rc=0, cwd=None, check_rc=True):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    if check_rc and rc is not None and p.returncode != rc:
        raise AssertionError("%s: exit %d, expected %d\nstdout: %s\nstderr: %s" %
                             (" ".join(cmd), p.returncode, rc, p.stdout, p.stderr))
    return p


def dimg(*args, rc=0, cwd=None):
    return run([DROVER_IMG] + list(args), rc=rc, cwd=cwd)


def qimg(*args, rc=0, cwd=None):
    return run(["qemu-img"] + list(args), rc=rc, cwd=cwd)


def qio(path, fmt, *cmds):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    run(args + [path])


def qinfo(path, *extra):
    return json.loads(qimg("info", "--output=json", *extra, path).stdout)


def write_at(path, off, data):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def make_raw(path, size):
    with open(path, "wb") as f:
        f.truncate(size)


def rand(n, seed):
    return random.Random(seed).randbytes(n)


def mixed_raw(path, size, seed=1):
    """Random data, zero-filled allocated regions and holes, at odd offsets."""
    make_raw(path, size)
    r = random.Random(seed)
    off = 0
    while off < size:
        kind = r.choice(["data", "zero", "hole", "data", "small"])
        n = min(r.choice([4 * KiB, 60 * KiB, 128 * KiB, 1 * MiB, 3 * MiB + 512]), size - off)
        if kind == "data":
            write_at(path, off, r.randbytes(n))
        elif kind == "zero":
            write_at(path, off, bytes(n))
        elif kind == "small":
            write_at(path, off + n // 2, r.randbytes(min(512, n // 2 or 1)))
        off += n


class ImgTest(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="drover-img-test.")
        self.dir = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def p(self, name):
        return os.path.join(self.dir, name)

    def assert_check_clean(self, path):
        r = qimg("check", "--output=json", path, rc=None)
        self.assertEqual(r.returncode, 0, "qemu-img check %s: %s%s" % (path, r.stdout, r.stderr))

    def assert_same_data(self, a, b, fa=None, fb=None):
        args = ["compare"]
        if fa:
            args += ["-f", fa]
        if fb:
            args += ["-F", fb]
        r = qimg(*args, a, b, rc=None)
        self.assertEqual(r.returncode, 0, "qemu-img compare %s %s: %s%s" % (a, b, r.stdout, r.stderr))

    def qmap(self, path):
        return json.loads(qimg("map", "--output=json", path).stdout)

    def dmap(self, path):
        return json.loads(dimg("map", "--output=json", path).stdout)

    def data_bytes(self, path):
        """Bytes qemu-img map says hold data at depth 0."""
        return sum(e["length"] for e in self.qmap(path) if e["data"] and e["depth"] == 0)


# ---------------------------------------------------------------- create

class Create(ImgTest):
    def test_sizes(self):
        for size, expect in [("1M", MiB), ("1.5G", GiB + GiB // 2), ("1000", 1024),
                             ("64k", 64 * KiB), ("2T", 2 * 1024 * GiB), ("0", 0)]:
            for fmt in ["raw", "qcow2"]:
                with self.subTest(size=size, fmt=fmt):
                    mine, ref = self.p("d%s.%s" % (size, fmt)), self.p("q%s.%s" % (size, fmt))
                    out = dimg("create", "-f", fmt, mine, size).stdout
                    qout = qimg("create", "-f", fmt, ref, size).stdout
                    self.assertEqual(out.replace(mine, "X"), qout.replace(ref, "X"))
                    self.assertEqual(qinfo(mine)["virtual-size"], expect)
                    self.assertEqual(qinfo(ref)["virtual-size"], expect)
                    if fmt == "raw":
                        self.assertEqual(os.path.getsize(mine), expect)
                    else:
                        self.assert_check_clean(mine)

    def test_qcow2_options(self):
        cases = [
            [], ["-o", "cluster_size=512"], ["-o", "cluster_size=4k"],
            ["-o", "cluster_size=2M"], ["-o", "compat=0.10"], ["-o", "compat=v2"],
            ["-o", "compat=1.1,lazy_refcounts=on"], ["-o", "refcount_bits=1"],
            ["-o", "refcount_bits=8"], ["-o", "refcount_bits=64"],
            ["-o", "preallocation=metadata"], ["-o", "preallocation=falloc"],
            ["-o", "preallocation=full"], ["-o", "cluster_size=4k", "-o", "preallocation=metadata"],
            ["-o", "extended_l2=on"], ["-o", "extended_l2=on,cluster_size=128k,lazy_refcounts=on"],
            ["-o", "compression_type=zlib,refcount_bits=32,cluster_size=1k"],
        ]
        for i, opts in enumerate(cases):
            with self.subTest(opts=opts):
                mine, ref = self.p("d%d.qcow2" % i), self.p("q%d.qcow2" % i)
                out = dimg("create", "-f", "qcow2", *opts, mine, "3M").stdout
                qout = qimg("create", "-f", "qcow2", *opts, ref, "3M").stdout
                # The same announcement, with only the file name differing.
                self.assertEqual(out.replace(mine, "X"), qout.replace(ref, "X"))
                self.assert_check_clean(mine)
                qi, ri = qinfo(mine), qinfo(ref)
                for key in ["virtual-size", "cluster-size", "format"]:
                    self.assertEqual(qi[key], ri[key], key)
                for key in ["compat", "lazy-refcounts", "refcount-bits", "extended-l2"]:
                    self.assertEqual(qi["format-specific"]["data"].get(key),
                                     ri["format-specific"]["data"].get(key), key)
                self.assert_same_data(mine, ref)
                if "preallocation=full" in opts or "preallocation=falloc" in opts:
                    self.assertGreaterEqual(qi["actual-size"], 3 * MiB)
                if any("metadata" in o for o in opts):
                    # Every cluster has its place in the file already.
                    self.assertTrue(all(e["present"] for e in self.qmap(mine)))
                # and qemu can write into it
                qio(mine, "qcow2", "write -P 7 1M 64k")
                self.assert_check_clean(mine)

    def test_raw_preallocation(self):
        for mode in ["off", "falloc", "full"]:
            with self.subTest(mode=mode):
                path = self.p("p%s.raw" % mode)
                dimg("create", "-f", "raw", "-o", "preallocation=" + mode, path, "2M")
                blocks = os.stat(path).st_blocks * 512
                if mode == "off":
                    self.assertLess(blocks, 2 * MiB)
                else:
                    self.assertGreaterEqual(blocks, 2 * MiB)
                self.assert_same_data(path, path)

    def test_backing(self):
        base = self.p("base.qcow2")
        qimg("create", "-f", "qcow2", base, "5M")
        qio(base, "qcow2", "write -P 3 0 1M")
        top = self.p("top.qcow2")
        # no size: the backing file's
        dimg("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
        info = qinfo(top)
        self.assertEqual(info["virtual-size"], 5 * MiB)
        self.assertEqual(info["backing-filename"], "base.qcow2")
        self.assertEqual(info["backing-filename-format"], "qcow2")
        self.assert_check_clean(top)
        self.assert_same_data(top, base)
        # the same through -o, with a size of its own
        top2 = self.p("top2.qcow2")
        dimg("create", "-f", "qcow2", "-o", "backing_file=base.qcow2,backing_fmt=qcow2", top2, "8M")
        info = qinfo(top2)
        self.assertEqual((info["virtual-size"], info["backing-filename"]), (8 * MiB, "base.qcow2"))
        # -u: the backing file need not exist
        top3 = self.p("top3.qcow2")
        dimg("create", "-f", "qcow2", "-u", "-b", "missing.qcow2", "-F", "raw", top3, "1M")
        self.assertEqual(qinfo(top3, "-U")["backing-filename"], "missing.qcow2")
        # a raw backing file
        rawb = self.p("b.raw")
        mixed_raw(rawb, 3 * MiB)
        top4 = self.p("top4.qcow2")
        dimg("create", "-f", "qcow2", "-b", "b.raw", "-F", "raw", top4)
        self.assert_same_data(top4, rawb, fb="raw")

    def test_option_help(self):
        out = dimg("create", "-f", "qcow2", "-o", "help").stdout
        for opt in ["size", "backing_file", "backing_fmt", "cluster_size", "preallocation",
                    "compat", "lazy_refcounts", "refcount_bits"]:
            self.assertIn("  %s=" % opt, out)
        self.assertIn("  size=", dimg("create", "-f", "raw", "-o", "?").stdout)
        self.assertNotIn("cluster_size", dimg("create", "-f", "raw", "-o", "help").stdout)


# ---------------------------------------------------------------- convert

class Convert(ImgTest):
    def test_raw_qcow2_raw(self):
        src = self.p("src.raw")
        mixed_raw(src, 24 * MiB + 4096)
        q = self.p("dst.qcow2")
        dimg("convert", "-O", "qcow2", src, q)
        self.assert_check_clean(q)
        self.assert_same_data(src, q, fa="raw")
        # holes and zero regions stay unallocated
        src_data = sum(e["length"] for e in self.qmap(src) if e["data"])
        self.assertLess(self.data_bytes(q), src_data)
        back = self.p("back.raw")
        dimg("convert", "-f", "qcow2", "-O", "raw", q, back)
        with open(src, "rb") as a, open(back, "rb") as b:
            self.assertEqual(a.read(), b.read())
        self.assertLess(os.stat(back).st_blocks * 512, os.stat(src).st_blocks * 512)
        # qcow2 -> qcow2 with other options, several workers out of order
        q2 = self.p("dst2.qcow2")
        dimg("convert", "-W", "-m", "4", "-O", "qcow2", "-o", "cluster_size=4k,compat=0.10", q, q2)
        self.assert_check_clean(q2)
        self.assert_same_data(src, q2, fa="raw")
        self.assertEqual(qinfo(q2)["cluster-size"], 4096)

    def test_qemu_written_qcow2_to_raw(self):
        q = self.p("q.qcow2")
        qimg("create", "-f", "qcow2", "-o", "cluster_size=16k", q, "9M")
        qio(q, "qcow2", "write -P 0x11 0 100k", "write -z 1M 1M", "write -P 0x22 3M 17k",
            "write -P 0 5M 64k", "write -P 0x33 9215k 1k")
        r = self.p("r.raw")
        dimg("convert", "-O", "raw", q, r)
        self.assert_same_data(q, r, fb="raw")
        ref = self.p("ref.raw")
        qimg("convert", "-O", "raw", q, ref)
        with open(r, "rb") as a, open(ref, "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_sparse_options(self):
        src = self.p("src.raw")
        make_raw(src, 4 * MiB)
        write_at(src, 0, bytes(1 * MiB))            # allocated zeroes
        write_at(src, 2 * MiB, rand(4096, 5))
        write_at(src, 3 * MiB + 8192, bytes(8192))  # zero run below -S 64k
        full = self.p("full.raw")
        dimg("convert", "-S", "0", "-O", "raw", src, full)
        self.assertGreaterEqual(os.stat(full).st_blocks * 512, 4 * MiB)
        self.assert_same_data(src, full)
        sparse = self.p("sparse.raw")
        dimg("convert", "-S", "64k", "-O", "raw", src, sparse)
        self.assertLessEqual(os.stat(sparse).st_blocks * 512, 64 * KiB)
        self.assert_same_data(src, sparse)
        q = self.p("full.qcow2")
        dimg("convert", "-S", "0", "-O", "qcow2", src, q)
        self.assertEqual(self.data_bytes(q), 4 * MiB)
        self.assert_check_clean(q)

    def test_compressed(self):
        src = self.p("src.raw")
        make_raw(src, 6 * MiB + 1536)               # last cluster partial
        text = (b"drover compresses this line well. " * 4000)[:2 * MiB]
        write_at(src, 0, text)
        write_at(src, 3 * MiB, rand(512 * KiB, 9))  # does not compress
        write_at(src, 6 * MiB, b"tail" * 300)
        q = self.p("c.qcow2")
        dimg("convert", "-c", "-O", "qcow2", src, q)
        self.assert_check_clean(q)
        self.assert_same_data(src, q, fa="raw")
        chk = json.loads(qimg("check", "--output=json", q).stdout)
        self.assertGreater(chk.get("compressed-clusters", 0), 0)
        self.assertLess(qinfo(q)["actual-size"], 2 * MiB)
        # and drover-img reads compressed clusters back (qemu-written too)
        qc = self.p("qc.qcow2")
        qimg("convert", "-c", "-O", "qcow2", src, qc)
        back = self.p("back.raw")
        dimg("convert", "-O", "raw", qc, back)
        self.assert_same_data(src, back)

    def test_flatten_chain_depth3(self):
        base = self.p("base.qcow2")
        qimg("create", "-f", "qcow2", base, "8M")
        qio(base, "qcow2", "write -P 1 0 8M")
        mid = self.p("mid.qcow2")
        qimg("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid)
        qio(mid, "qcow2", "write -P 2 1M 2M", "write -z 5M 64k")
        mid2 = self.p("mid2.qcow2")
        qimg("create", "-f", "qcow2", "-o", "cluster_size=4k", "-b", "mid.qcow2", "-F", "qcow2", mid2)
        qio(mid2, "qcow2", "write -P 3 1536k 4k", "write -P 4 7M 100k")
        top = self.p("top.qcow2")
        qimg("create", "-f", "qcow2", "-b", "mid2.qcow2", "-F", "qcow2", top)
        qio(top, "qcow2", "write -P 5 2M 512", "write -z 7M 64k")
        flat = self.p("flat.qcow2")
        dimg("convert", "-O", "qcow2", top, flat)
        self.assert_check_clean(flat)
        self.assertNotIn("backing-filename", qinfo(flat))
        self.assert_same_data(top, flat)
        flat_raw = self.p("flat.raw")
        dimg("convert", "-O", "raw", top, flat_raw)
        self.assert_same_data(top, flat_raw, fb="raw")
        # -B: only the top layer is copied; the rest stays in the backing file
        thin = self.p("thin.qcow2")
        dimg("convert", "-O", "qcow2", "-B", "mid2.qcow2", "-F", "qcow2", top, thin)
        self.assert_check_clean(thin)
        self.assertEqual(qinfo(thin)["backing-filename"], "mid2.qcow2")
        self.assert_same_data(top, thin)
        self.assertLessEqual(self.data_bytes(thin), 64 * KiB + 512)

    def test_several_sources(self):
        a, b, c = self.p("a.raw"), self.p("b.qcow2"), self.p("c.raw")
        mixed_raw(a, 3 * MiB + 512, seed=3)
        qimg("create", "-f", "qcow2", b, "2M")
        qio(b, "qcow2", "write -P 0x5a 64k 1M")
        make_raw(c, 1 * MiB)
        write_at(c, 1 * MiB - 4096, rand(4096, 4))
        dst = self.p("cat.qcow2")
        dimg("convert", "-O", "qcow2", a, b, c, dst)
        self.assert_check_clean(dst)
        expect = self.p("expect.raw")
        with open(expect, "wb") as out:
            with open(a, "rb") as f:
                out.write(f.read())
            out.write(bytes(64 * KiB) + b"\x5a" * MiB + bytes(2 * MiB - 64 * KiB - MiB))
            with open(c, "rb") as f:
                out.write(f.read())
        self.assertEqual(qinfo(dst)["virtual-size"], os.path.getsize(expect))
        self.assert_same_data(expect, dst, fa="raw")
        # qemu-img concatenates the same way
        ref = self.p("ref.qcow2")
        qimg("convert", "-O", "qcow2", a, b, c, ref)
        self.assert_same_data(ref, dst)

    def test_existing_target_and_caches(self):
        src = self.p("src.raw")
        mixed_raw(src, 5 * MiB, seed=7)
        dst = self.p("dst.qcow2")
        qimg("create", "-f", "qcow2", dst, "6M")
        qio(dst, "qcow2", "write -P 0xee 0 6M")     # garbage the copy must overwrite
        dimg("convert", "-n", "-O", "qcow2", "-t", "none", "-T", "none", src, dst)
        self.assert_check_clean(dst)
        qimg("resize", "--shrink", dst, "5M")
        self.assert_same_data(src, dst, fa="raw")
        # an existing output with a backing file: its backing data must not
        # show through where the source has zeroes or holes
        bb, tt = self.p("bb.qcow2"), self.p("tt.qcow2")
        qimg("create", "-f", "qcow2", bb, "5M")
        qio(bb, "qcow2", "write -P 0x99 0 5M")
        qimg("create", "-f", "qcow2", "-b", "bb.qcow2", "-F", "qcow2", tt)
        dimg("convert", "-n", "-O", "qcow2", src, tt)
        self.assert_check_clean(tt)
        self.assert_same_data(src, tt, fa="raw")
        out = dimg("convert", "-p", "-O", "raw", src, self.p("p.raw")).stdout
        self.assertIn("(100.00/100%)", out)

    def test_large_sparse(self):
        src = self.p("big.raw")
        make_raw(src, 64 * GiB)
        for i, off in enumerate([0, 5 * GiB + 12345, 33 * GiB, 64 * GiB - 4096]):
            write_at(src, off, rand(4096, i))
        q = self.p("big.qcow2")
        dimg("convert", "-O", "qcow2", src, q)
        self.assert_check_clean(q)
        self.assertLess(qinfo(q)["actual-size"], 4 * MiB)
        back = self.p("back.raw")
        dimg("convert", "-O", "raw", q, back)
        self.assertLess(os.stat(back).st_blocks * 512, 1 * MiB)
        self.assertEqual(dimg("compare", src, back).stdout, "Images are identical.\n")
        self.assertEqual(dimg("compare", "-f", "raw", src, q).stdout, "Images are identical.\n")


# ---------------------------------------------------------------- reading qemu's images

def qemu_images(d):
    """A set of qcow2 images written by qemu-img/qemu-io."""
    out = []
    base = os.path.join(d, "base.qcow2")
    qimg("create", "-f", "qcow2", base, "4M")
    qio(base, "qcow2", "write -P 0xab 0 128k", "write -z 1M 64k", "write -P 1 3M 4k")
    qimg("snapshot", "-c", "snap1", base)
    qio(base, "qcow2", "write -P 0xcd 64k 64k")
    qimg("snapshot", "-c", "second one", base)
    out.append(base)
    top = os.path.join(d, "top.qcow2")
    qimg("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
    qio(top, "qcow2", "write -P 7 512k 8k", "write -z 3M 64k")
    out.append(top)
    for name, opts in [("v2.qcow2", "compat=0.10"), ("c4k.qcow2", "cluster_size=4096,refcount_bits=8"),
                       ("lazy.qcow2", "lazy_refcounts=on,cluster_size=2M"),
                       ("meta.qcow2", "preallocation=metadata")]:
        p = os.path.join(d, name)
        qimg("create", "-f", "qcow2", "-o", opts, p, "5M")
        qio(p, "qcow2", "write -P 9 100k 300k", "write -z 2M 1M")
        out.append(p)
    comp = os.path.join(d, "comp.qcow2")
    raw = os.path.join(d, "src.raw")
    mixed_raw(raw, 3 * MiB, seed=11)
    qimg("convert", "-c", "-O", "qcow2", raw, comp)
    out.append(comp)
    out.append(raw)
    return out


class ReadQemuImages(ImgTest):
    def setUp(self):
        super().setUp()
        self.images = qemu_images(self.dir)

    def test_info_json(self):
        for img in self.images:
            with self.subTest(img=os.path.basename(img)):
                name = os.path.basename(img)
                q = json.loads(qimg("info", "--output=json", name, cwd=self.dir).stdout)
                d = json.loads(dimg("info", "--output=json", name, cwd=self.dir).stdout)
                for key in ["filename", "format", "virtual-size", "actual-size", "cluster-size",
                            "dirty-flag", "backing-filename", "full-backing-filename",
                            "backing-filename-format"]:
                    self.assertEqual(d.get(key), q.get(key), key)
                qs, ds = q.get("format-specific", {}), d.get("format-specific", {})
                self.assertEqual(ds.get("type"), qs.get("type"))
                for key, val in qs.get("data", {}).items():
                    if key in ds.get("data", {}):
                        self.assertEqual(ds["data"][key], val, key)
                if q["format"] == "qcow2":
                    for key in ["compat", "lazy-refcounts", "refcount-bits"]:
                        if key in qs["data"]:
                            self.assertEqual(ds["data"].get(key), qs["data"][key], key)
                self.assertEqual(len(d.get("snapshots", [])), len(q.get("snapshots", [])))
                for a, b in zip(d.get("snapshots", []), q.get("snapshots", [])):
                    for key, val in b.items():
                        self.assertEqual(a.get(key), val, "snapshot " + key)

    def test_info_human_and_chain(self):
        for img in self.images:
            name = os.path.basename(img)
            with self.subTest(img=name):
                q = qimg("info", name, cwd=self.dir).stdout.splitlines()
                d = dimg("info", name, cwd=self.dir).stdout.splitlines()
                # The common part, line for line; the snapshot table too.
                head = [l for l in q if not l.startswith("    ") and
                        not l.startswith("Format specific")]
                dhead = [l for l in d if not l.startswith("    ") and
                         not l.startswith("Format specific")]
                self.assertEqual(dhead, head)
        q = json.loads(qimg("info", "--output=json", "--backing-chain", "top.qcow2", cwd=self.dir).stdout)
        d = json.loads(dimg("info", "--output=json", "--backing-chain", "top.qcow2", cwd=self.dir).stdout)
        self.assertEqual([i["filename"] for i in d], [i["filename"] for i in q])
        self.assertEqual([i["format"] for i in d], [i["format"] for i in q])
        human = dimg("info", "--backing-chain", "top.qcow2", cwd=self.dir).stdout
        self.assertIn("image: top.qcow2\n", human)
        self.assertIn("\nimage: base.qcow2\n", human)

    def test_map(self):
        for img in self.images:
            name = os.path.basename(img)
            with self.subTest(img=name):
                q = json.loads(qimg("map", "--output=json", name, cwd=self.dir).stdout)
                d = json.loads(dimg("map", "--output=json", name, cwd=self.dir).stdout)
                self.assertEqual(d, q)
                if name != "comp.qcow2":
                    self.assertEqual(dimg("map", name, cwd=self.dir).stdout,
                                     qimg("map", name, cwd=self.dir).stdout)

    def test_check(self):
        for img in self.images:
            name = os.path.basename(img)
            with self.subTest(img=name):
                q = qimg("check", "--output=json", name, cwd=self.dir, rc=None)
                d = dimg("check", "--output=json", name, cwd=self.dir, rc=None)
                self.assertEqual(d.returncode, q.returncode)
                if q.returncode == 0:
                    self.assertEqual(json.loads(d.stdout), json.loads(q.stdout))
                    self.assertEqual(dimg("check", name, cwd=self.dir).stdout,
                                     qimg("check", name, cwd=self.dir).stdout)

    def test_compare(self):
        d = self.dir
        flat = self.p("flat.raw")
        qimg("convert", "-O", "raw", self.p("top.qcow2"), flat)
        for a, b in [("top.qcow2", "flat.raw"), ("comp.qcow2", "src.raw"), ("base.qcow2", "top.qcow2"),
                     ("v2.qcow2", "c4k.qcow2"), ("lazy.qcow2", "meta.qcow2")]:
            with self.subTest(a=a, b=b):
                for strict in ([], ["-s"]):
                    q = qimg("compare", *strict, a, b, cwd=d, rc=None)
                    r = dimg("compare", *strict, a, b, cwd=d, rc=None)
                    self.assertEqual((r.returncode, r.stdout), (q.returncode, q.stdout))
        # sizes differ: equal while the extra part reads as zeroes
        small, big = self.p("small.raw"), self.p("big.raw")
        make_raw(small, 1 * MiB)
        make_raw(big, 2 * MiB)
        for extra in [None, 1 * MiB + 5000]:
            if extra:
                write_at(big, extra, b"A")
            for args in [["small.raw", "big.raw"], ["big.raw", "small.raw"], ["-s", "small.raw", "big.raw"]]:
                q = qimg("compare", *args, cwd=d, rc=None)
                r = dimg("compare", *args, cwd=d, rc=None)
                self.assertEqual((r.returncode, r.stdout), (q.returncode, q.stdout), args)
        write_at(small, 777, b"B")
        q = qimg("compare", "small.raw", "flat.raw", cwd=d, rc=None)
        r = dimg("compare", "small.raw", "flat.raw", cwd=d, rc=None)
        self.assertEqual((r.returncode, r.stdout), (q.returncode, q.stdout))
        self.assertIn("(100.00/100%)", dimg("compare", "-p", "top.qcow2", "flat.raw", cwd=d).stdout)


# ---------------------------------------------------------------- check and repair

def refcount_block_offset(path):
    """Offset of the first refcount block of a qcow2 image."""
    with open(path, "rb") as f:
        hdr = f.read(104)
        rt_off = int.from_bytes(hdr[48:56], "big")
        f.seek(rt_off)
        return int.from_bytes(f.read(8), "big")


class Check(ImgTest):
    def make(self, name):
        p = self.p(name)
        qimg("create", "-f", "qcow2", p, "64M")
        qio(p, "qcow2", "write -P 1 0 64k")
        return p

    def test_leak(self):
        p = self.make("leak.qcow2")
        os.truncate(p, 1 * MiB)
        write_at(p, refcount_block_offset(p) + 10 * 2, b"\x00\x01")   # cluster 10: used by nobody
        p2 = self.p("leak2.qcow2")
        shutil.copy(p, p2)
        q = qimg("check", "--output=json", p, rc=3)
        d = dimg("check", "--output=json", p, rc=3)
        self.assertEqual(json.loads(d.stdout)["leaks"], json.loads(q.stdout)["leaks"])
        self.assertIn("leaked clusters were found", dimg("check", p, rc=3).stdout)
        out = dimg("check", "-r", "leaks", p).stdout
        self.assertIn("1 leaked clusters", out)
        self.assertIn("No errors were found on the image.", out)
        self.assert_check_clean(p)
        d = json.loads(dimg("check", "-r", "all", "--output=json", p2).stdout)
        self.assertEqual(d.get("leaks-fixed"), 1)
        self.assert_check_clean(p2)

    def test_corruption(self):
        p = self.make("bad.qcow2")
        write_at(p, refcount_block_offset(p) + 3 * 2, b"\x00\x00")   # L1 table's refcount: 0
        q = json.loads(qimg("check", "--output=json", p, rc=2).stdout)
        d = json.loads(dimg("check", "--output=json", p, rc=2).stdout)
        self.assertEqual(d["corruptions"], q["corruptions"])
        self.assertIn("errors were found on the image", dimg("check", p, rc=2).stdout)
        dimg("check", "-r", "all", p)
        self.assert_check_clean(p)

    def test_raw_has_nothing_to_check(self):
        p = self.p("r.raw")
        make_raw(p, MiB)
        r = dimg("check", p, rc=63)
        self.assertEqual(len(r.stderr.splitlines()), 1)


# ---------------------------------------------------------------- snapshots, resize

class SnapshotResize(ImgTest):
    def test_snapshots(self):
        p = self.p("s.qcow2")
        dimg("create", "-f", "qcow2", p, "4M")
        qio(p, "qcow2", "write -P 1 0 1M")
        saved1 = self.p("saved1.raw")
        qimg("convert", "-O", "raw", p, saved1)
        dimg("snapshot", "-c", "first", p)
        qio(p, "qcow2", "write -P 2 512k 1M", "write -z 0 64k")
        saved2 = self.p("saved2.raw")
        qimg("convert", "-O", "raw", p, saved2)
        dimg("snapshot", "-c", "second", p)
        qio(p, "qcow2", "write -P 3 3M 1M")
        self.assert_check_clean(p)
        ql = qimg("snapshot", "-l", p).stdout.splitlines()
        dl = dimg("snapshot", "-l", p).stdout.splitlines()
        self.assertEqual(dl, ql)
        self.assertEqual([l.split()[1] for l in ql[2:]], ["first", "second"])
        dimg("snapshot", "-a", "first", p)
        self.assert_check_clean(p)
        self.assert_same_data(saved1, p, fa="raw")
        dimg("snapshot", "-a", "2", p)               # by id
        self.assert_same_data(saved2, p, fa="raw")
        dimg("snapshot", "-d", "first", p)
        self.assert_check_clean(p)
        ql = qimg("snapshot", "-l", p).stdout.splitlines()
        self.assertEqual([l.split()[1] for l in ql[2:]], ["second"])
        self.assertEqual(dimg("snapshot", "-l", p).stdout.splitlines(), ql)
        # qemu-img applies what drover-img made
        qimg("snapshot", "-a", "second", p)
        self.assert_same_data(saved2, p, fa="raw")
        dimg("snapshot", "-d", "second", p)
        self.assertEqual(dimg("snapshot", "-l", p).stdout, "")
        self.assert_check_clean(p)

    def test_resize(self):
        for fmt in ["raw", "qcow2"]:
            with self.subTest(fmt=fmt):
                p = self.p("r." + fmt)
                qimg("create", "-f", fmt, p, "2M")
                qio(p, fmt, "write -P 5 0 2M")
                self.assertEqual(dimg("resize", "-f", fmt, p, "+3M").stdout, "Image resized.\n")
                self.assertEqual(qinfo(p)["virtual-size"], 5 * MiB)
                qio(p, fmt, "read -P 5 0 2M", "read -P 0 2M 3M")
                dimg("resize", "-f", fmt, p, "7M")
                self.assertEqual(qinfo(p)["virtual-size"], 7 * MiB)
                r = dimg("resize", "-f", fmt, p, "-1M", rc=1)          # shrinking needs --shrink
                self.assertEqual(len(r.stderr.splitlines()), 1)
                dimg("resize", "-f", fmt, "--shrink", p, "-6M")
                self.assertEqual(qinfo(p)["virtual-size"], 1 * MiB)
                qio(p, fmt, "read -P 5 0 1M")
                if fmt == "qcow2":
                    self.assert_check_clean(p)
        p = self.p("pre.raw")
        make_raw(p, MiB)
        dimg("resize", "-f", "raw", "--preallocation=full", p, "3M")
        self.assertGreaterEqual(os.stat(p).st_blocks * 512, 2 * MiB)


# ---------------------------------------------------------------- rebase, commit

class RebaseCommit(ImgTest):
    def chain(self):
        base1 = self.p("base1.qcow2")
        qimg("create", "-f", "qcow2", base1, "4M")
        qio(base1, "qcow2", "write -P 1 0 2M", "write -P 6 3M 64k")
        top = self.p("top.qcow2")
        qimg("create", "-f", "qcow2", "-b", "base1.qcow2", "-F", "qcow2", top)
        qio(top, "qcow2", "write -P 2 512k 64k", "write -P 3 1500k 3k")
        before = self.p("before.raw")
        qimg("convert", "-O", "raw", top, before)
        return base1, top, before

    def test_rebase_safe(self):
        base1, top, before = self.chain()
        base2 = self.p("base2.qcow2")
        qimg("create", "-f", "qcow2", base2, "4M")
        qio(base2, "qcow2", "write -P 1 0 1M", "write -P 9 2M 1M")
        dimg("rebase", "-b", "base2.qcow2", "-F", "qcow2", top)
        self.assert_check_clean(top)
        info = qinfo(top)
        self.assertEqual((info["backing-filename"], info["backing-filename-format"]),
                         ("base2.qcow2", "qcow2"))
        self.assert_same_data(before, top, fa="raw")
        # only what differs was copied: 1M..2M of base1 and 3M..3M+64k, plus what base2 adds
        self.assertLessEqual(self.data_bytes(top), 3 * MiB)
        # and to no backing file at all
        dimg("rebase", "-p", "-b", "", top)
        self.assertNotIn("backing-filename", qinfo(top))
        self.assert_same_data(before, top, fa="raw")
        self.assert_check_clean(top)

    def test_rebase_unsafe(self):
        base1, top, before = self.chain()
        shutil.copy(base1, self.p("copy.qcow2"))
        dimg("rebase", "-u", "-b", "copy.qcow2", "-F", "qcow2", top)
        self.assertEqual(qinfo(top)["backing-filename"], "copy.qcow2")
        self.assert_same_data(before, top, fa="raw")
        # -u changes nothing else: pointing at an empty image shows the holes
        qimg("create", "-f", "qcow2", self.p("empty.qcow2"), "4M")
        dimg("rebase", "-u", "-b", "empty.qcow2", "-F", "qcow2", top)
        r = qimg("compare", "-f", "raw", before, top, rc=1)
        self.assertIn("Content mismatch at offset 0!", r.stdout)
        self.assert_check_clean(top)

    def test_commit(self):
        base1, top, before = self.chain()
        dimg("commit", top)
        self.assert_check_clean(base1)
        self.assert_check_clean(top)
        self.assert_same_data(before, base1, fa="raw")
        self.assert_same_data(before, top, fa="raw")
        self.assertEqual(self.data_bytes(top), 0)   # emptied

    def test_commit_with_snapshot(self):
        # Emptying after the commit frees what only the active layer held;
        # the snapshot keeps its clusters and still applies.
        base1, top, before = self.chain()
        dimg("snapshot", "-c", "s1", top)
        snap = self.p("snap.raw")
        qimg("convert", "-O", "raw", top, snap)
        qio(top, "qcow2", "write -P 9 128k 64k")
        now = self.p("now.raw")
        qimg("convert", "-O", "raw", top, now)
        dimg("commit", top)
        self.assert_check_clean(top)
        self.assert_check_clean(base1)
        self.assert_same_data(now, top, fa="raw")
        self.assertEqual(self.data_bytes(top), 0)
        self.assertIn("s1", qimg("snapshot", "-l", top).stdout)
        dimg("snapshot", "-a", "s1", top)
        self.assert_check_clean(top)
        self.assertGreater(self.data_bytes(top), 0)

    def test_commit_keep_and_base(self):
        base1, mid, before_mid = self.chain()
        top = self.p("top2.qcow2")
        qimg("create", "-f", "qcow2", "-b", "top.qcow2", "-F", "qcow2", top)
        qio(top, "qcow2", "write -P 4 0 64k", "write -z 3M 4k")
        expect = self.p("expect.raw")
        qimg("convert", "-O", "raw", top, expect)
        out = dimg("commit", "-p", "-b", base1, top).stdout
        self.assertIn("Image committed.", out)
        self.assert_check_clean(base1)
        self.assert_same_data(expect, base1, fa="raw")
        self.assert_same_data(expect, top, fa="raw")
        self.assertGreater(self.data_bytes(top), 0)  # -b implies -d
        # -d into the immediate backing file
        top3 = self.p("top3.qcow2")
        qimg("create", "-f", "qcow2", "-b", "base1.qcow2", "-F", "qcow2", top3, "6M")
        qio(top3, "qcow2", "write -P 8 5M 4k")          # past base1's end: base grows
        exp3 = self.p("exp3.raw")
        qimg("convert", "-O", "raw", top3, exp3)
        dimg("commit", "-d", top3)
        self.assertEqual(qinfo(base1)["virtual-size"], 6 * MiB)
        self.assert_same_data(exp3, base1, fa="raw")
        self.assertGreater(self.data_bytes(top3), 0)


# ---------------------------------------------------------------- bad input

class BadInput(ImgTest):
    """Each case: drover-img gives one error line and qemu-img's exit status."""

    def setUp(self):
        super().setUp()
        qimg("create", "-f", "qcow2", self.p("q.qcow2"), "1M")
        make_raw(self.p("r.raw"), MiB)
        with open(self.p("trunc.qcow2"), "wb") as f:
            f.write(b"QFI\xfb\x00\x00\x00\x03" + bytes(20))
        qimg("create", "-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", self.p("orphan.qcow2"), "1M")

    CASES = [
        ["info", "missing.qcow2"],
        ["info", "-f", "qcow2", "r.raw"],
        ["info", "-f", "vmdk2", "q.qcow2"],
        ["info", "--output=xml", "q.qcow2"],
        ["info", "trunc.qcow2"],
        ["info"],
        ["map", "missing.qcow2"],
        ["map", "orphan.qcow2"],
        ["create", "-f", "qcow2", "n.qcow2", "1x"],
        ["create", "-f", "qcow2", "n.qcow2", "16E"],
        ["create", "-f", "qcow2", "n.qcow2", "-5"],
        ["create", "-f", "qcow2", "n.qcow2"],
        ["create", "-f", "foo", "n.qcow2", "1M"],
        ["create", "-f", "qcow2", "-o", "garbage", "n.qcow2", "1M"],
        ["create", "-f", "qcow2", "-o", "bogus=1", "n.qcow2", "1M"],
        ["create", "-f", "qcow2", "-o", "cluster_size=3000", "n.qcow2", "1M"],
        ["create", "-f", "qcow2", "-o", "cluster_size=4M", "n.qcow2", "1M"],
        ["create", "-f", "qcow2", "-o", "refcount_bits=3", "n.qcow2", "1M"],
        ["create", "-f", "qcow2", "-o", "compat=0.10,lazy_refcounts=on", "n.qcow2", "1M"],
        ["create", "-f", "qcow2", "-o", "lazy_refcounts=maybe", "n.qcow2", "1M"],
        ["create", "-f", "qcow2", "-o", ",", "n.qcow2", "1M"],
        ["create", "-f", "qcow2", "-o", "size=3M", "n.qcow2", "1M"],
        ["create", "-f", "raw", "-o", "cluster_size=4k", "n.raw", "1M"],
        ["create", "-f", "qcow2", "-b", "missing.qcow2", "-F", "qcow2", "n.qcow2", "1M"],
        ["create", "-f", "qcow2", "-b", "q.qcow2", "n.qcow2", "1M"],
        ["create", "-f", "qcow2", "nodir/n.qcow2", "1M"],
        ["create", "--bogus"],
        ["create", "-x"],
        ["convert", "-O", "qcow2", "missing.raw", "out.qcow2"],
        ["convert", "-O", "foo", "r.raw", "out.x"],
        ["convert", "-c", "-O", "raw", "r.raw", "out.raw"],
        ["convert", "-S", "1000", "-O", "raw", "r.raw", "out.raw"],
        ["convert", "-S", "abc", "-O", "raw", "r.raw", "out.raw"],
        ["convert", "-O", "raw", "r.raw"],
        ["convert", "-O", "qcow2", "-o", "foo=1", "r.raw", "out.qcow2"],
        ["convert", "-O", "raw", "-B", "q.qcow2", "r.raw", "out.raw"],
        ["convert", "-t", "sometimes", "-O", "raw", "r.raw", "out.raw"],
        ["resize", "q.qcow2", "0"],
        ["resize", "q.qcow2", "-1M"],
        ["resize", "q.qcow2", "-10G"],
        ["resize", "--preallocation=bogus", "r.raw", "3M"],
        ["resize", "-f", "raw", "r.raw", "30Q"],
        ["resize", "r.raw"],
        ["snapshot", "-l", "-c", "x", "q.qcow2"],
        ["snapshot", "-a", "nope", "q.qcow2"],
        ["snapshot", "-d", "nope", "q.qcow2"],
        ["snapshot", "-c", "x", "-f", "raw", "r.raw"],
        ["compare", "q.qcow2"],
        ["compare", "q.qcow2", "missing.qcow2"],
        ["check", "-r", "bogus", "q.qcow2"],
        ["check", "missing.qcow2"],
        ["check", "-f", "raw", "r.raw"],
        ["rebase", "q.qcow2"],
        ["rebase", "-b", "missing.qcow2", "-F", "qcow2", "orphan.qcow2"],
        ["rebase", "-u", "-b", "other.qcow2", "q.qcow2"],
        ["commit", "q.qcow2"],
        ["commit", "-b", "missing.qcow2", "q.qcow2"],
        ["bogus"],
        [],
    ]

    def test_cases(self):
        for args in self.CASES:
            with self.subTest(args=args):
                q = qimg(*args, cwd=self.dir, rc=None)
                d = dimg(*args, cwd=self.dir, rc=None)
                self.assertNotEqual(q.returncode, 0, "qemu-img accepts it: %s" % q.stdout)
                self.assertEqual(d.returncode, q.returncode, "stderr: " + d.stderr)
                lines = d.stderr.splitlines()
                self.assertEqual(len(lines), 1, d.stderr)
                self.assertTrue(lines[0].startswith("drover-img: "), lines[0])
                self.assertNotIn("\x1b", lines[0])

    def test_messages_name_the_input(self):
        r = dimg("create", "-f", "qcow2", "-o", "cluster_size=3000", "n.qcow2", "1M", cwd=self.dir, rc=1)
        self.assertIn("cluster_size", r.stderr)
        self.assertIn("3000", r.stderr)
        r = dimg("info", "missing.qcow2", cwd=self.dir, rc=1)
        self.assertIn("missing.qcow2", r.stderr)
        r = dimg("create", "-f", "qcow2", "n.qcow2", "1x", cwd=self.dir, rc=1)
        self.assertIn("'1x'", r.stderr)
        self.assertFalse(os.path.exists(self.p("n.qcow2")))


def main():
    global DROVER_IMG
    argv = sys.argv[1:]
    if len(argv) < 2 or argv[0] != "--drover-img":
        print(__doc__, file=sys.stderr)
        return 2
    DROVER_IMG = os.path.abspath(argv[1])
    for tool in ["qemu-img", "qemu-io"]:
        if not shutil.which(tool):
            print("%s not found: install qemu-utils" % tool, file=sys.stderr)
            return 2
    prog = unittest.main(argv=[sys.argv[0]] + argv[2:], exit=False, verbosity=2)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
