"""--deepspeed ds_config.json as HF users pass it: the merged configuration drives the plugins;
what this build cannot do yet is refused in one line instead of silently done differently."""
import json
import os

from loomtest import LOOM, LoomTestCase, SOURCE, free_port, loom, run

EXAMPLES = os.path.join(SOURCE, "examples", "deepspeed")
# The zero_optimization / scheduler that ds_zero2_today.json trains with, and nothing else.
MINIMAL_ZERO2 = {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}},
                 "scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": "auto", "warmup_num_steps": "auto"}}}



class DeepSpeedTest(LoomTestCase):
    data_kind = "blobs"

    def write(self, name, config):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            json.dump(config, f)
        return path

    def test_zero1_example_config_runs_with_two_ranks(self):
        out = self.out("zero1")
        _, stdout, _ = run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(),
                           *self.train_args(out, "--deepspeed", os.path.join(EXAMPLES, "ds_zero1.json"),
                                            "--per_device_train_batch_size", "16", "--max_steps", "20",
                                            "--logging_steps", "1", "--learning_rate", "1e-2", "--warmup_steps", "4",
                                            "--ddp_timeout", "30"))
        self.assertIn("[sharding] zero1 ", stdout)
        self.assertIn("[scheduler] warmup_decay_lr ", stdout)
        self.assertIn("zero1.allgather_bucket_size = 200000000", stdout)
        self.assertIn('"stage": 1', stdout)                      # the merged configuration is logged
        logs = [e for e in self.state(out)["log_history"] if "learning_rate" in e]
        for e in logs:                                              # WarmupDecayLR after its warmup
            t = e["step"]
            if t >= 4:
                self.assertAlmostEqual(e["learning_rate"], 1e-2 * max(0, (20 - t) / (20 - 4)), places=12)
        losses = [e["loss"] for e in logs]
        self.assertLess(losses[-1], losses[0])

    def test_hf_zero2_example_runs_with_two_ranks(self):
        out = self.out("zero2")
        _, stdout, _ = run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(),
                           *self.train_args(out, "--deepspeed", os.path.join(EXAMPLES, "ds_zero2.json"),
                                            "--per_device_train_batch_size", "16", "--max_steps", "10",
                                            "--logging_steps", "1", "--learning_rate", "1e-2", "--ddp_timeout", "30"))
        self.assertIn("[sharding] zero2 ", stdout)
        self.assertIn("zero2.overlap_comm = true", stdout)
        self.assertIn("[scheduler] warmup_lr ", stdout)
        losses = [e["loss"] for e in self.state(out)["log_history"] if "loss" in e]
        self.assertLess(losses[-1], losses[0])

    def test_stage0_adam_without_adamw_mode(self):
        path = self.write("adam.json", {"zero_optimization": {"stage": 0}, "gradient_clipping": "auto",
                                        "optimizer": {"type": "Adam", "params": {"lr": 0.001, "adam_w_mode": False}}})
        _, stdout, _ = loom(*self.train_args(self.out("adam"), "--deepspeed", path, "--max_steps", "3",
                                             "--learning_rate", "0.001"))
        self.assertIn("[optimizer] adam ", stdout)

    def onebit_run(self, name, freeze_step):
        # eps 1e-4: v frozen after only 4 warm-up steps is ~0 where gradients were ~0, and m / eps
        # then diverges (DeepSpeed advises freeze_step at 15-25% of the run; 12 steps cannot).
        path = self.write(name + ".json", {"optimizer": {"type": "OneBitAdam", "params": {
            "lr": 1e-3, "eps": 1e-4, "freeze_step": freeze_step}}, "zero_optimization": {"stage": 0}})
        out = self.out(name)
        _, stdout, _ = run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(),
                           *self.train_args(out, "--deepspeed", path, "--learning_rate", "1e-3", "--adam_epsilon",
                                            "1e-4", "--per_device_train_batch_size", "16", "--max_steps", "12",
                                            "--logging_steps", "1", "--ddp_timeout", "30"))
        losses = [e["loss"] for e in self.state(out)["log_history"] if "learning_rate" in e]
        self.assertEqual(len(losses), 12)
        return stdout, losses

    def test_onebit_adam_two_ranks(self):
        stdout, losses = self.onebit_run("onebit", 4)
        self.assertIn("[optimizer] onebit_adam ", stdout)
        self.assertIn("[sharding] ddp ", stdout)
        self.assertIn("onebit_adam.freeze_step = 4", stdout)
        self.assertIn("step 5: freeze_step 4 reached", stdout)     # the switch, logged once by rank 0
        self.assertEqual(stdout.count("freeze_step 4 reached"), 1)
        self.assertTrue(all(l == l and abs(l) < 1e6 for l in losses), losses)
        self.assertLess(sum(losses[-3:]) / 3, sum(losses[:3]) / 3)
        self.assertLess(losses[-1], losses[0])
        # The logged loss of step k is computed before update k: the first freeze_step + 1 of them
        # see warm-up updates only, the same as a run that never leaves the warm-up; the next one
        # sees the first compressed update.
        _, warmup_only = self.onebit_run("onebit_warmup", 1000)
        for a, b in zip(losses[:5], warmup_only[:5]):
            self.assertAlmostEqual(a, b, delta=1e-6 * abs(b))
        self.assertNotAlmostEqual(losses[5], warmup_only[5], delta=1e-6 * abs(warmup_only[5]))

    def test_onebit_adam_refuses_zero2(self):
        self.assert_refused({"optimizer": {"type": "OneBitAdam", "params": {"freeze_step": 4}},
                             "zero_optimization": {"stage": 2}}, "onebit_adam needs --plugin ddp", "'zero2'")

    def assert_refused(self, config, *expected, extra=()):
        path = self.write("refused.json", config)
        code, _, stderr = loom(*self.train_args(self.out("refused"), "--deepspeed", path,
                                                "--per_device_train_batch_size", "8", *extra), check=False)
        self.assertEqual(code, 2, stderr)
        lines = [l for l in stderr.splitlines() if l.strip()]
        self.assertEqual(len(lines), 1, stderr)
        for text in expected:
            self.assertIn(text, lines[0])

    def test_stage3_cpu_offload_has_no_effect(self):
        # HF's documented ZeRO-3 config offloads optimizer and parameters to the CPU, where loom's
        # zero3 runs: each noted once on rank 0, and the same model as without offload.
        stage3 = {"zero_optimization": {"stage": 3}}
        offloaded = {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": True},
                                           "offload_param": {"device": "cpu", "pin_memory": True}}}
        models = []
        for name, config in (("plain3", stage3), ("offloaded3", offloaded)):
            out = self.out(name)
            _, stdout, stderr = run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(),
                                    *self.train_args(out, "--deepspeed", self.write(name + ".json", config),
                                                     "--per_device_train_batch_size", "4", "--max_steps", "3",
                                                     "--ddp_timeout", "30"))
            self.assertIn("[sharding] zero3 ", stdout)
            with open(os.path.join(out, "model.safetensors"), "rb") as f:
                models.append(f.read())
        self.assertIn("offload_param.device \"cpu\" has no effect", stderr)
        self.assertIn("CPU offload of the optimizer", stderr)
        self.assertEqual(models[0], models[1])

    def test_refusals_are_one_line(self):
        # Stage 3 is zero3: NVMe offload is refused, and HF refuses its batch size search.
        self.assert_refused({"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "nvme"}}},
                            "refused.json", "NVMe offload) is not supported")
        self.assert_refused({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme"}}},
                            "zero_optimization.offload_param.device \"nvme\"", "not supported")
        self.assert_refused({"zero_optimization": {"stage": 3}}, "--auto_find_batch_size", "ZeRO-3",
                            extra=("--auto_find_batch_size",))
        self.assert_refused({"fp16": {"enabled": True}, "bf16": {"enabled": True}}, "bf16.enabled", "fp16")
        self.assert_refused({"train_micro_batch_size_per_gpu": 16}, "16", "8")
        self.assert_refused({"zero_optimization": {"stage": 1, "reduce_bucket_sise": 5}}, "reduce_bucket_size")
        self.assert_refused({"zero_optimization": {"stage": 1, "overlap_comm": True}}, "overlap_comm")

    # Today's DeepSpeed keys (docs/semantics/deepspeed.md#todays-keys). Each of these tests fails
    # on a loom that knows only v0.3.10's keys: the old schema refuses the keys as unknown.

    def launch_two_ranks(self, out, config, *extra):
        _, stdout, stderr = run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(),
                                *self.train_args(out, "--deepspeed", config, "--per_device_train_batch_size", "16",
                                                 "--gradient_accumulation_steps", "2", "--max_steps", "6",
                                                 "--warmup_steps", "2", "--learning_rate", "1e-2", "--logging_steps",
                                                 "1", "--save_strategy", "no", "--ddp_timeout", "30", *extra))
        with open(os.path.join(out, "model.safetensors"), "rb") as f:
            model = f.read()
        return model, [e["loss"] for e in self.state(out)["log_history"] if "loss" in e], stdout, stderr

    def test_todays_zero2_config_trains_bit_identical_to_the_minimal_one(self):
        full = self.launch_two_ranks(self.out("today"), os.path.join(EXAMPLES, "ds_zero2_today.json"))
        minimal = self.launch_two_ranks(self.out("minimal"), self.write("minimal.json", MINIMAL_ZERO2))
        self.assertIn("[sharding] zero2 ", full[2])
        self.assertIn("zero2.cpu_offload = true", full[2])
        self.assertNotIn("warning", full[3])                       # every section at its disabled value
        self.assertEqual(len(full[1]), 6)
        self.assertEqual(full[1], minimal[1])
        self.assertEqual(full[0], minimal[0])

    def test_todays_no_effect_key_warns_once(self):
        config = self.write("profiler.json", {"flops_profiler": {"enabled": True, "profile_step": 1},
                                              "zero_optimization": {"stage": 2}})
        _, _, _, stderr = self.launch_two_ranks(self.out("profiler"), config)
        self.assertEqual(stderr.count("flops_profiler.enabled true has no effect here"), 1, stderr)
        self.assertIn("[rank 0] loom: warning: " + config + ": flops_profiler.enabled true", stderr)

    def one_epoch(self, name, config, *extra):
        out = self.out(name)
        args = ["--per_device_train_batch_size", "24", "--num_train_epochs", "1", "--save_strategy", "no", *extra]
        if config is not None:
            args = ["--deepspeed", self.write(name + ".json", config), *args]
        loom(*self.train_args(out, *args))
        with open(os.path.join(out, "model.safetensors"), "rb") as f:
            model = f.read()
        with open(os.path.join(out, "training_args.json")) as f:
            return self.state(out)["global_step"], model, json.load(f)

    def test_todays_mapped_keys(self):
        # dataloader_drop_last is --dataloader_drop_last: 1600 examples in batches of 24.
        steps, model, args = self.one_epoch("drop-file", {"dataloader_drop_last": True})
        flag_steps, flag_model, _ = self.one_epoch("drop-flag", {}, "--dataloader_drop_last")
        kept_steps, _, _ = self.one_epoch("drop-none", {"dataloader_drop_last": False})
        self.assertEqual((steps, flag_steps, kept_steps), (66, 66, 67))
        self.assertTrue(args["dataloader_drop_last"])
        self.assertEqual(model, flag_model)
        self.assert_refused({"dataloader_drop_last": True}, "dataloader_drop_last=true in", "--dataloader_drop_last "
                            "false", extra=["--dataloader_drop_last", "false"])
        # checkpoint.use_node_local_storage is --save_on_each_node (HF writes one from the other).
        _, _, args = self.one_epoch("node-local", {"checkpoint": {"use_node_local_storage": True,
                                                                  "tag_validation": "Fail"}}, "--max_steps", "1")
        self.assertTrue(args["save_on_each_node"])
        self.assert_refused({"checkpoint": {"use_node_local_storage": False}}, "checkpoint.use_node_local_storage="
                            "false in", "--save_on_each_node true", extra=["--save_on_each_node"])
        # The gradient dtypes loom uses (the parameters') are accepted, others refused.
        _, fp32_model, _ = self.one_epoch("dtypes", {"communication_data_type": "fp32",
                                                     "data_types": {"grad_accum_dtype": "fp32"}})
        _, plain_model, _ = self.one_epoch("no-dtypes", {})
        self.assertEqual(fp32_model, plain_model)
        self.assert_refused({"communication_data_type": "fp16"}, "communication_data_type \"fp16\" is not supported",
                            "fp32 in this run")
        self.assert_refused({"fp16": {"enabled": True}, "data_types": {"grad_accum_dtype": "fp32"}},
                            "data_types.grad_accum_dtype \"fp32\" is not supported", "fp16 in this run")

    def test_todays_refusals_and_typos_are_one_line(self):
        self.assert_refused({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "nvme",
                                                                                      "nvme_path": "/local_nvme"}}},
                            "offload_optimizer.device \"nvme\"", "not supported")
        self.assert_refused({"elasticity": {"enabled": True, "max_train_batch_size": 64}},
                            "elasticity.enabled true is not supported")
        self.assert_refused({"hybrid_engine": {"enabled": True}}, "hybrid_engine.enabled true is not supported")
        self.assert_refused({"torch_autocast": {"enabled": True}}, "torch_autocast.enabled true is not supported")
        self.assert_refused({"pipeline": {"stages": 2}}, "pipeline.stages > 1 is not supported")
        self.assert_refused({"compression_training": {"sparse_pruning": {"shared_parameters": {"enabled": True}}}},
                            "compression_training with a technique enabled is not supported")
        self.assert_refused({"progressive_layer_drop": {"enabled": True}},
                            "progressive_layer_drop.enabled true is not supported")
        self.assert_refused({"zero_optimization": {"stage": 2, "round_robin_gradient": True}},
                            "unknown key 'zero_optimization.round_robin_gradient'",
                            "did you mean 'zero_optimization.round_robin_gradients'?")
        self.assert_refused({"activation_checkpoint": {"partition_activations": False}},
                            "did you mean 'activation_checkpointing'?")
