"""test_loading: which libtollgate.so the package loads, in the documented
order, and what it says when there is none."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from tgbroker import BUILD, PACKAGE_DIR

SHOW = "import tollgate; print(tollgate.library)"


def load(package_dir=PACKAGE_DIR, **env):
    base = {k: v for k, v in os.environ.items()
            if k not in ("TOLLGATE_LIB", "TG_BUILD")}
    base.update(env, PYTHONPATH=package_dir)
    return subprocess.run([sys.executable, "-c", SHOW], env=base,
                          capture_output=True, text=True)


class TestLoading(unittest.TestCase):
    def test_tollgate_lib_comes_first(self):
        so = os.path.abspath(os.path.join(BUILD, "libtollgate.so.0"))
        p = load(TOLLGATE_LIB=so, TG_BUILD="/nonexistent")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), so)

    def test_then_tg_build(self):
        p = load(TG_BUILD=BUILD)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(),
                         os.path.join(BUILD, "libtollgate.so"))

    def test_then_the_build_tree_or_the_system(self):
        p = load()
        tree = os.path.normpath(os.path.join(PACKAGE_DIR, "..", "..",
                                             "build", "libtollgate.so"))
        if os.path.exists(tree):
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stdout.strip(), tree)
        elif p.returncode == 0:
            self.assertEqual(p.stdout.strip(), "libtollgate.so.0")
        else:
            self.assertIn("libtollgate not found; tried", p.stderr)

    def test_a_bad_tollgate_lib_says_so(self):
        p = load(TOLLGATE_LIB="/nonexistent/libtollgate.so", TG_BUILD=BUILD)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("/nonexistent/libtollgate.so", p.stderr)
        self.assertIn("TOLLGATE_LIB", p.stderr)

    def test_installed_it_asks_the_loader(self):
        """As `make install' leaves it: a package away from any build
        tree, the library where the loader looks."""
        with tempfile.TemporaryDirectory() as d:
            shutil.copytree(os.path.join(PACKAGE_DIR, "tollgate"),
                            os.path.join(d, "tollgate"))
            p = load(d, LD_LIBRARY_PATH=os.path.abspath(BUILD))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "libtollgate.so.0")
