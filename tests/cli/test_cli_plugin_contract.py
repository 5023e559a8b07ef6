"""Third-party plugins that break the contract of docs/plugins.md#rules (tests/plugin/fixtures):
each is refused or reported in one line that names the plugin and what it did, with a non-zero
exit, never a crash or a hang."""
import os
import unittest

from loomtest import BUILD, LoomTestCase

FIXTURES = os.path.join(BUILD, "tests", "fixtures")
BAD_SHAPE = os.path.join(BUILD, "tests", "trainer-fixtures", "mlp_bad_shape.so")
BAD_RANGES = os.path.join(BUILD, "tests", "trainer-fixtures", "none_bad_ranges.so")


class PluginContractTest(LoomTestCase):
    data_kind = "blobs"

    def args(self, *extra):
        return self.train_args(self.out("contract"), "--max_steps", "4", *extra)

    def fixture(self, name):
        return os.path.join(FIXTURES, name + ".so")

    def test_required_member_left_null(self):
        # Before: loaded, then a jump to address 0 at the first optimizer step (SIGSEGV).
        self.assert_error(self.args("--plugin", self.fixture("null_member")), "null_member.so",
                          "optimizer vtable of 'null_member'", "required member 'step' NULL")

    def test_failures_without_a_message(self):
        opt = ("--plugin", self.fixture("misbehave_opt"))
        self.assert_error(self.args(*opt, "--misbehave_opt.mode", "silent_create"), "misbehave_opt: create failed")
        # api->fail with a NULL format: before, vsnprintf read address 0.
        self.assert_error(self.args(*opt, "--misbehave_opt.mode", "null_fail"), "misbehave_opt",
                          "without a message")
        # Before: "loom: error: internal error", naming neither the plugin nor the member.
        self.assert_error(self.args(*opt, "--misbehave_opt.mode", "silent_step"),
                          "optimizer 'misbehave_opt': step failed (internal error)", status=1)
        self.assert_error(self.args("--plugin", self.fixture("misbehave_cb")), "callback 'misbehave_cb' failed")
        # Before: "loom: error: out of memory", with no word of which plugin.
        self.assert_error(self.args("--plugin", BAD_SHAPE),
                          "model 'mlp_bad_shape': bind failed (out of memory) without a message",
                          env={"LOOM_TEST_BIND": "silent"}, status=1)

    def test_callback_control_flag_neither_0_nor_1(self):
        # Before: should_training_stop = 7 counted as true, and the run stopped at step 2 of 4 with
        # exit 0 and no word of which callback had asked.
        self.assert_error(self.args("--plugin", self.fixture("misbehave_cb"), "--misbehave_cb.mode", "control"),
                          "callback 'misbehave_cb' set control->should_training_stop to 7", "step 2",
                          "0 or 1", status=None)

    def test_one_callback_name_given_twice(self):
        # Before: both instances ran (each misbehave_cb event twice) and one --misbehave_cb.mode
        # configured both.
        cb, twin = self.fixture("misbehave_cb"), self.fixture("misbehave_cb_twin")
        self.assert_error(self.args("--plugin", cb, "--plugin", cb), "callback 'misbehave_cb' given twice",
                          f"--plugin {cb} ({cb}) and by --plugin {cb} ({cb})")
        self.assert_error(self.args("--plugin", cb, "--plugin", twin), "callback 'misbehave_cb' given twice",
                          f"--plugin {cb} ({cb}) and by --plugin {twin} ({twin})")
        # A callback the run has anyway (--disable_tqdm: printer).
        line = self.assert_error(self.args("--plugin", "printer"), "callback 'printer' given twice",
                                 "the run's default")
        self.assertEqual(line.count("printer.so"), 2, line)

    def test_one_backend_given_twice(self):
        # Before: the second --plugin of a backend silently replaced the first, where two of any
        # other kind are refused.
        self.assert_error(self.args("--plugin", "cuda", "--plugin", "cuda"),
                          "--plugin cuda and --plugin cuda are both backend plugins: give one")

    def test_comm_failure_without_a_message(self):
        # Before: "loom: error: communication error", naming no plugin and no member. Every caller,
        # the trainer and the sharding plugins alike, holds the host's table in front of the plugin.
        comm = ("--plugin", self.fixture("misbehave_comm"))
        for sharding, member in (("ddp", "all_reduce"), ("zero1", "reduce"), ("zero2", "all_gather")):
            self.assert_error(self.args(*comm, "--plugin", sharding, "--misbehave_comm.fail", member),
                              f"comm 'misbehave_comm': {member} failed (communication error) without a message",
                              status=None)

    def test_scheduler_rates_that_no_optimizer_can_use(self):
        # With an optimizer that takes what it is given, nothing checked the rate before: the run
        # stepped with -1 (ascending the loss) or NaN, and ended with exit 0.
        for lr in ("-1", "nan", "inf"):
            self.assert_error(self.args("--plugin", self.fixture("misbehave_opt"), "--plugin",
                                        self.fixture("misbehave_sched"), "--misbehave_sched.lr", lr),
                              "scheduler 'misbehave_sched'", "learning rate", "at step 1", "not a finite value >= 0")

    def test_optimizer_that_writes_nan(self):
        # Before: "fp32: non-finite gradient at optimizer step 2 ... (lower --learning_rate or set
        # --max_grad_norm)", which blamed the gradients of the step after the fault.
        self.assert_error(self.args("--plugin", self.fixture("misbehave_opt"), "--misbehave_opt.mode", "nan_step"),
                          "optimizer step 2: the parameters are not finite", "optimizer 'misbehave_opt'",
                          status=None)

    def test_model_output_shape_out_of_range(self):
        # Before: the evaluation read shape[ndim - 1] or past the host's LOOM_MAX_DIMS array and
        # sized its buffers from it, then wrote eval_results.json as if nothing had happened.
        args = self.args("--plugin", BAD_SHAPE, "--validation_file", os.path.join(self.data, "validation.bin"),
                         "--do_eval")
        for ndim in ("0", "9"):
            self.assert_error(args, f"model 'mlp_bad_shape': output_shape reported {ndim} dimensions (1 to 8)",
                              env={"LOOM_TEST_OUTPUT_NDIM": ndim})

    def test_model_param_info_out_of_contract(self):
        # Before: 9 dimensions or a negative extent corrupted the heap before the first step
        # (malloc's abort); a name used twice, or none, was found by the first save only.
        args = self.args("--plugin", BAD_SHAPE, "--save_steps", "1")
        for how, said in (("dup_name", "two parameters are called 'layers.0.weight'"),
                          ("no_name", "param_info(1) gave no name"),
                          ("ndim", "parameter 'layers.0.bias' has 9 dimensions (1 to 8)"),
                          ("extent", "parameter 'layers.0.bias' has extent -3 in dimension 0")):
            self.assert_error(args, f"model 'mlp_bad_shape': {said}", env={"LOOM_TEST_PARAM_INFO": how})

    def test_sharding_owned_ranges_out_of_contract(self):
        # Before: a gap trained every parameter but the last and ended with exit 0; a range past
        # the parameters stepped memory the run does not own, in silence; a range whose begin
        # is past its end crashed (SIGSEGV).
        args = self.args("--plugin", BAD_RANGES)
        for how, said in (("gap", "no rank owns parameters ["),
                          ("past", "owned_ranges(0) gave range 0 = [0, "),
                          ("inverted", "owned_ranges(0) gave range 0 = [")):
            self.assert_error(args, f"sharding 'none_bad_ranges': {said}", env={"LOOM_TEST_OWNED": how})


if __name__ == "__main__":
    unittest.main(verbosity=2)
