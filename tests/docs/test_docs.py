#!/usr/bin/python3
"""The documents and the programs agree on what can be checked mechanically:

- every relative link in README.md and docs/*.md names a file (or directory) that exists, and
  every #anchor names a heading of that file (docs/wsqctl.md was linked twice and missing);
- every long option wsqd's getopt table accepts is on the usage line of `wsqd --help`
  (--print-default was missing), and an unknown option exits 2.

Usage: test_docs.py SOURCE_DIR WSQD
"""

import os
import re
import subprocess
import sys
import unittest

SRC = WSQD = None


def anchor(heading):
    """GitHub's anchor for a Markdown heading."""
    h = heading.strip().lower()
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def headings(path):
    out = set()
    with open(path, encoding="utf-8") as f:
        in_code = False
        for line in f:
            if line.startswith("```"):
                in_code = not in_code
            elif not in_code and line.startswith("#"):
                out.add(anchor(line.lstrip("#")))
    return out


class Links(unittest.TestCase):
    def test_relative_links_resolve(self):
        docs = [os.path.join(SRC, "README.md")] + [
            os.path.join(SRC, "docs", f) for f in sorted(os.listdir(os.path.join(SRC, "docs")))
            if f.endswith(".md")]
        bad = []
        for doc in docs:
            with open(doc, encoding="utf-8") as f:
                text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
            for target in re.findall(r"\]\(([^)\s]+)\)", text):
                if re.match(r"^[a-z]+:", target):
                    continue   # http:, https:, mailto:
                path, _, frag = target.partition("#")
                full = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
                if not os.path.exists(full):
                    bad.append("%s: %s (no such file)" % (os.path.relpath(doc, SRC), target))
                elif frag and full.endswith(".md") and frag not in headings(full):
                    bad.append("%s: %s (no such heading)" % (os.path.relpath(doc, SRC), target))
        self.assertEqual(bad, [], "broken links:\n" + "\n".join(bad))


class WsqdHelp(unittest.TestCase):
    def test_usage_names_every_option(self):
        with open(os.path.join(SRC, "broker", "main.c"), encoding="utf-8") as f:
            opts = re.findall(r'\{"([a-z-]+)",\s*(?:no|required)_argument,\s*NULL,\s*\'(.)\'\}',
                              f.read())
        self.assertGreaterEqual(len(opts), 5, "the option table was not found in main.c")
        out = subprocess.run([WSQD, "--help"], capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 0)
        usage = out.stdout.splitlines()[0]
        for long_, short in opts:
            # the usage line names each option, by its long or its short name
            self.assertTrue(re.search(r"\[(--%s|-%s)\b" % (long_, short), usage),
                            "the usage line omits --%s: %r" % (long_, usage))
            self.assertIn("--" + long_, out.stdout, "--help never mentions --" + long_)

    def test_unknown_option_exits_2(self):
        out = subprocess.run([WSQD, "--no-such-option"], capture_output=True, text=True,
                             timeout=10)
        self.assertEqual(out.returncode, 2)
        self.assertIn("usage:", out.stderr)


if __name__ == "__main__":
    SRC, WSQD = sys.argv[1], sys.argv[2]
    r = unittest.main(argv=sys.argv[:1], exit=False, verbosity=2).result
    sys.exit(0 if r.wasSuccessful() else 1)
