"""HF's --fsdp / --fsdp_config, and v4.4-v4.34's --sharded_ddp modes, on loom's sharding plugins:
shard_grad_op and zero_dp_2 train the model --plugin zero2 trains, no_shard the model DDP trains
and simple the sharded_ddp plugin's, bit for bit on 2 ranks; FSDP's
activation_checkpointing is --gradient_checkpointing; training_args.json writes fsdp as HF's
list and takes it back; offload has no effect on the CPU with any strategy (zero3 included: it
runs on the CPU only), and HF's bad combinations are one-line errors. (The runs of full_shard,
hybrid_shard and zero_dp_3 without offload are zero3's tests.)"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import GPT2_NANO, LOOM, TokensTestCase, free_port, run  # noqa: E402


class FsdpTest(TokensTestCase):

    def launch(self, out, *extra):
        args = ["train", "--output_dir", out, "--overwrite_output_dir", "--train_file", self.tokens, "--disable_tqdm",
                *GPT2_NANO, "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2", "--max_steps",
                "4", "--learning_rate", "3e-3", "--logging_steps", "1", "--save_strategy", "no", "--ddp_timeout", "30",
                *extra]
        _, stdout, stderr = run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(), "--timeout",
                                "10", *args)
        with open(os.path.join(out, "model.safetensors"), "rb") as f:
            model = f.read()
        return model, [e["loss"] for e in self.state(out)["log_history"] if "loss" in e], stdout, stderr

    def test_strategies_are_loom_plugins_bit_for_bit(self):
        zero2 = self.launch(self.out("zero2"), "--plugin", "zero2")
        fsdp = self.launch(self.out("fsdp"), "--fsdp", "shard_grad_op auto_wrap")
        self.assertIn("strategy zero2", fsdp[2])
        self.assertIn("--fsdp auto_wrap has no effect here", fsdp[3])
        self.assertEqual(fsdp[0], zero2[0])
        self.assertEqual(fsdp[1], zero2[1])
        self.assertEqual(len(fsdp[1]), 4)
        ddp = self.launch(self.out("ddp"))
        no_shard = self.launch(self.out("no-shard"), "--fsdp", "no_shard")
        self.assertIn("strategy ddp", no_shard[2])
        self.assertEqual(no_shard[0], ddp[0])
        self.assertEqual(no_shard[1], ddp[1])
        # Which makes the two comparisons tell the strategies apart: zero2 reduces each
        # micro-batch as it comes, DDP the accumulated step.
        self.assertNotEqual(zero2[0], ddp[0])
        # --plugin naming another strategy contradicts --fsdp.
        self.assert_error(self.train_args(self.out("contradiction"), "--fsdp", "shard_grad_op", "--plugin", "zero1"),
                          "--fsdp")

    def test_fairscale_modes_of_sharded_ddp(self):
        # HF v4.4-v4.34: simple is v4.2's bool (OSS + ShardedDDP), zero_dp_2 FairScale's FSDP
        # without resharding, which is ZeRO-2.
        plugin = self.launch(self.out("plugin-sharded"), "--plugin", "sharded_ddp")
        for form in (["--sharded_ddp"], ["--sharded_ddp", "simple"], ["--sharded_ddp", "true"]):
            with self.subTest(form=form):
                simple = self.launch(self.out("simple"), *form)
                self.assertIn("strategy sharded_ddp", simple[2])
                self.assertEqual(simple[0], plugin[0])
        zero2 = self.launch(self.out("plugin-zero2"), "--plugin", "zero2")
        out = self.out("zero-dp-2")
        zero_dp_2 = self.launch(out, "--sharded_ddp", "zero_dp_2 offload auto_wrap")
        self.assertIn("strategy zero2", zero_dp_2[2])
        self.assertIn("--sharded_ddp offload has no effect on the CPU", zero_dp_2[3])
        self.assertEqual(zero_dp_2[0], zero2[0])
        self.assertEqual(zero_dp_2[1], zero2[1])
        with open(os.path.join(out, "training_args.json")) as f:
            self.assertEqual(json.load(f)["sharded_ddp"], ["zero_dp_2", "offload", "auto_wrap"])
        # v4.2's training_args.json holds a bool.
        config = os.path.join(self.tmp, "v42.json")
        with open(config, "w") as f:
            json.dump({"sharded_ddp": True}, f)
        self.assertIn("strategy sharded_ddp", self.launch(self.out("v42"), "--config", config)[2])

    def test_config_file_lists_and_activation_checkpointing(self):
        # An accelerate-style fsdp_config (fsdp_ prefixes) in an HF --config with fsdp as a list.
        fsdp_config = os.path.join(self.tmp, "fsdp_config.json")
        with open(fsdp_config, "w") as f:
            json.dump({"fsdp_activation_checkpointing": True, "fsdp_transformer_layer_cls_to_wrap": ["GPT2Block"],
                       "fsdp_backward_prefetch": "backward_pre", "fsdp_use_orig_params": True, "xla": False}, f)
        config = os.path.join(self.tmp, "args.json")
        with open(config, "w") as f:
            json.dump({"fsdp": ["shard_grad_op"], "fsdp_config": fsdp_config}, f)
        out = self.out("from-config")
        model, losses, stdout, stderr = self.launch(out, "--config", config)
        self.assertIn("strategy zero2", stdout)
        self.assertNotIn("warning", stderr)
        plain = self.launch(self.out("checkpointing"), "--plugin", "zero2", "--gradient_checkpointing")
        self.assertEqual(model, plain[0])
        self.assertEqual(losses, plain[1])
        with open(os.path.join(out, "training_args.json")) as f:
            written = json.load(f)
        self.assertEqual(written["fsdp"], ["shard_grad_op"])
        self.assertFalse(written["gradient_checkpointing"])
        # HF writes the dict it read, the fsdp_ prefixes dropped; a run's file loads back.
        self.assertEqual(written["fsdp_config"], {"activation_checkpointing": True,
                                                  "transformer_layer_cls_to_wrap": ["GPT2Block"],
                                                  "backward_prefetch": "backward_pre", "use_orig_params": True,
                                                  "xla": False})
        again = self.out("again")
        model_again, losses_again, stdout, _ = self.launch(again, "--config", os.path.join(out, "training_args.json"),
                                                           "--output_dir", again)
        self.assertIn("strategy zero2", stdout)
        self.assertEqual(model_again, model)

    def test_default_is_written_as_an_empty_list(self):
        out = self.out("default")
        run(LOOM, *self.train_args(out, "--max_steps", "1"))
        with open(os.path.join(out, "training_args.json")) as f:
            self.assertEqual(json.load(f)["fsdp"], [])

    def test_refusals(self):
        base = self.train_args(self.out("refused"), "--max_steps", "1")
        bad_json = os.path.join(self.tmp, "bad.json")
        with open(bad_json, "w") as f:
            f.write('{"min_num_params": 1,')
        for extra, *expected in [
                (["--fsdp", "offload"], "--fsdp offload", "can't work on its own"),
                (["--fsdp", "full_shard shard_grad_op"], "not compatible with --fsdp shard_grad_op"),
                (["--fsdp", "no_shard shard_grad_op"], "more than one sharding strategy"),
                (["--fsdp", "shard_grad_op sharded"], "'sharded' is not one of"),
                (["--fsdp", "shard_grad_op", "--deepspeed", '{"train_batch_size": "auto"}'], "--deepspeed",
                 "not possible"),
                (["--fsdp", "shard_grad_op", "--sharded_ddp"], "--sharded_ddp", "not possible"),
                (["--sharded_ddp", "offload"], "--sharded_ddp offload", "can't work on its own"),
                (["--sharded_ddp", "simple zero_dp_2"], "simple", "not compatible with any other option"),
                (["--sharded_ddp", "zero_dp_2 zero_dp_3"], "not compatible with --sharded_ddp zero_dp_3"),
                (["--sharded_ddp", "zero_dp"], "'zero_dp' is not one of"),
                (["--sharded_ddp", "zero_dp_2", "--deepspeed", '{"train_batch_size": "auto"}'], "--sharded_ddp",
                 "--deepspeed", "not possible"),
                (["--sharded_ddp", "--plugin", "zero1"], "--plugin zero1", "--sharded_ddp"),
                (["--fsdp", "shard_grad_op", "--fsdp_config", '{"xla": true}'], "XLA", "not supported"),
                (["--fsdp", "shard_grad_op", "--fsdp_config", '{"activation_checkpointing": true}',
                  "--gradient_checkpointing"], "activation_checkpointing and --gradient_checkpointing"),
                (["--fsdp", "shard_grad_op", "--fsdp_config", '{"min_num_params": 10}',
                  "--fsdp_transformer_layer_cls_to_wrap", "Block"], "mutually exclusive"),
                (["--fsdp", "shard_grad_op", "--fsdp_config", bad_json], bad_json),
                (["--fsdp", "shard_grad_op", "--fsdp_config", "[1]"], "--fsdp_config"),
                (["--fsdp", "shard_grad_op", "--fsdp_config", '{"version": 2, "version": 1}'], "duplicate key"),
        ]:
            with self.subTest(extra=extra):
                self.assert_error(base + extra, *expected)

    def test_offload_with_full_sharding_has_no_effect(self):
        # zero3 runs on the CPU, where everything is host memory already: the same model as
        # without offload, with the warning zero2's offload gets. A JSON config's fsdp: true is
        # HF's full_shard.
        plain = self.launch(self.out("full"), "--fsdp", "full_shard")
        config = os.path.join(self.tmp, "true.json")
        with open(config, "w") as f:
            json.dump({"fsdp": True, "fsdp_config": {"offload_params": True}}, f)
        for extra, warning in ((["--fsdp", "full_shard offload"], "--fsdp offload has no effect on the CPU"),
                               (["--config", config], "--fsdp_config offload_params has no effect here"),
                               (["--sharded_ddp", "zero_dp_3 offload"], "--sharded_ddp offload has no effect")):
            with self.subTest(extra=extra):
                run_ = self.launch(self.out("offloaded"), *extra)
                self.assertIn("strategy zero3", run_[2])
                self.assertIn(warning, run_[3])
                self.assertEqual(run_[0], plain[0])


if __name__ == "__main__":
    import unittest
    unittest.main()
