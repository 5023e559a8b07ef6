"""The examples a user copies: a custom loss in C, and a plugin built out of tree."""
import os
import shutil

from loomtest import BIN, BUILD, SOURCE, LoomTestCase, loom, read_safetensors, run


class ExamplesTest(LoomTestCase):
    def common(self):
        return ("--max_steps", "25", "--logging_steps", "5", "--learning_rate", "1e-2", "--seed", "11")

    def test_custom_loss_with_unit_weights_equals_the_default_loss(self):
        default, custom = self.out("default"), self.out("custom")
        loom(*self.train_args(default, *self.common()))
        run(os.path.join(BIN, "custom_loss"), "--class_weights", "1,1,1",
            *self.train_args(custom, *self.common())[1:])
        a = read_safetensors(os.path.join(default, "model.safetensors"))
        b = read_safetensors(os.path.join(custom, "model.safetensors"))
        for name in a:
            worst = max(abs(x - y) for x, y in zip(a[name][2], b[name][2]))
            self.assertLess(worst, 1e-5, name)
        la = [e["loss"] for e in self.state(default)["log_history"] if "loss" in e]
        lb = [e["loss"] for e in self.state(custom)["log_history"] if "loss" in e]
        for x, y in zip(la, lb):
            self.assertAlmostEqual(x, y, delta=1e-5)

    def test_custom_loss_weights_change_training(self):
        default, weighted = self.out("default2"), self.out("weighted")
        loom(*self.train_args(default, *self.common()))
        run(os.path.join(BIN, "custom_loss"), "--class_weights", "1,8,1",
            *self.train_args(weighted, *self.common())[1:])
        a = read_safetensors(os.path.join(default, "model.safetensors"))
        b = read_safetensors(os.path.join(weighted, "model.safetensors"))
        self.assertGreater(max(abs(x - y) for x, y in zip(a["classifier.bias"][2], b["classifier.bias"][2])), 1e-4)
        # The class with the large weight gets its bias pushed up relative to the others.
        self.assertGreater(b["classifier.bias"][2][1] - a["classifier.bias"][2][1],
                           b["classifier.bias"][2][0] - a["classifier.bias"][2][0])

    def test_out_of_tree_plugin_against_the_installed_headers(self):
        prefix = os.path.join(self.tmp, "prefix")
        run("cmake", "--install", BUILD, "--prefix", prefix)
        self.assertTrue(os.path.exists(os.path.join(prefix, "include", "loom", "optimizer.h")))
        # Only the public headers: the ABI and the embedding ones (trainer.h and what it includes).
        core = os.path.join(prefix, "include", "loom", "core")
        self.assertEqual(sorted(os.listdir(core)), ["args.h", "dataset.h", "error.h", "memory_check.h",
                                                    "plugin_loader.h", "ranks.h", "trainer.h", "training_args.def"])
        # ... and they are enough: an embedder's file including trainer.h compiles against them.
        unit = os.path.join(self.tmp, "embed.c")
        with open(unit, "w") as f:
            f.write("#include <trainer.h>\nint main(void) { return loom_trainer_default_hooks() == 0; }\n")
        run("cc", "-std=c11", "-fsyntax-only", "-I", core, "-I", os.path.join(prefix, "include"), unit)
        # Relocatable: no absolute path in the CMake package; a moved prefix still resolves.
        config_dir = os.path.join(prefix, "lib", "cmake", "loom")
        for name in os.listdir(config_dir):
            with open(os.path.join(config_dir, name)) as f:
                text = f.read()
            self.assertNotIn("/usr/local", text, name)
            self.assertNotIn(prefix, text, name)
        moved = os.path.join(self.tmp, "moved")
        shutil.copytree(prefix, moved, symlinks=True)
        probe = os.path.join(self.tmp, "probe")
        os.makedirs(probe)
        with open(os.path.join(probe, "CMakeLists.txt"), "w") as f:
            f.write("cmake_minimum_required(VERSION 3.20)\nproject(probe LANGUAGES C)\nfind_package(loom REQUIRED)\n"
                    "message(STATUS \"plugins=${LOOM_PLUGIN_DIR}\")\n")
        _, stdout, _ = run("cmake", "-S", probe, "-B", os.path.join(probe, "build"), f"-DCMAKE_PREFIX_PATH={moved}")
        self.assertIn(f"plugins={os.path.join(moved, 'lib', 'loom', 'plugins')}", stdout)
        shutil.rmtree(moved, ignore_errors=True)
        build = os.path.join(self.tmp, "lion-build")
        run("cmake", "-S", os.path.join(SOURCE, "examples", "out_of_tree_plugin"), "-B", build,
            f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release", "-DLOOM_FATAL_WARNINGS=ON")
        run("cmake", "--build", build)
        plugin = os.path.join(build, "example_lion.so")
        self.assertTrue(os.path.exists(plugin))
        # The installed command finds its own plugins beside its library, and loads the new one.
        installed = os.path.join(prefix, "bin", "loom")
        out = self.out("lion")
        _, stdout, _ = run(installed, *self.train_args(out, "--plugin", plugin, "--max_steps", "60",
                                                        "--logging_steps", "10", "--learning_rate", "3e-3",
                                                        "--example_lion.beta2", "0.98"))
        self.assertIn("[optimizer] example_lion", stdout)
        self.assertIn("example_lion.beta2 = 0.98", stdout)
        self.assertIn(os.path.join(prefix, "lib"), stdout)  # default plugins came from the install
        losses = [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]
        self.assertLess(losses[-1], losses[0])
        _, listing, _ = run("pkg-config", "--cflags", "loom", env={"PKG_CONFIG_PATH": os.path.join(prefix, "lib", "pkgconfig")})
        include = listing.split()[0][2:]
        self.assertEqual(os.path.realpath(include), os.path.realpath(os.path.join(prefix, "include")))
        shutil.rmtree(prefix, ignore_errors=True)
