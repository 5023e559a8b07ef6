"""A checkpoint that is another on one node (docs/checkpoints.md#files-on-one-node): two nodes
with disks of their own, where node 1's checkpoint-6 is not node 0's but another run's at the same
step (an earlier run's left by --save_on_each_node, an old backup). Each rank reads its optimizer,
scheduler and RNG files from its own disk, so the resume must stop both nodes, before a step, in
one line naming rank 1, its folder and the file; a copy of node 0's checkpoint resumes bit for bit."""
import os
import shutil
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import LOOM, free_port, run  # noqa: E402
from test_cli_nodes import NodesTestCase  # noqa: E402

STALE = r"rank 1: \S+/checkpoint-6 is not the checkpoint rank 0 resumes from: its \S+ differs from rank 0's"


class StaleCheckpointTest(NodesTestCase):

    def other_run(self, name, *extra):
        """The same job with another --seed on one machine and one folder: its checkpoint-6."""
        out = self.out(name)
        run(LOOM, "launch", "--nproc_per_node", "2", "--master_port", free_port(),
            *self.train_args(out, "--overwrite_output_dir", "--seed", "7", "--save_steps", "6", *extra))
        return os.path.join(out, "checkpoint-6")

    def with_node_1s(self, seeds, checkpoint, name):
        """seeds with node 1's checkpoint-6 replaced by `checkpoint`."""
        stale = self.out(f"{name}-stale-seed")
        shutil.rmtree(stale, ignore_errors=True)
        shutil.copytree(checkpoint, os.path.join(stale, "checkpoint-6"))
        return [seeds[0], stale]

    def test_another_runs_checkpoint_on_node_1_is_refused(self):
        for plugin in ("ddp", "zero1"):
            common = ("--save_on_each_node", "--save_steps", "6", "--plugin", plugin)
            full = self.nodes(f"stale-{plugin}-full", *common)
            self.assert_ran(full)
            seeds = self.with_node_1s(self.disks_at(full, 6, f"stale-{plugin}"),
                                      self.other_run(f"stale-{plugin}-other", "--plugin", plugin), plugin)
            # Found by loom train in each node's output_dir, and named by path: both refused.
            for how in ((), ("--resume_from_checkpoint", self.out(f"stale-{plugin}-half") + "/checkpoint-6")):
                half = self.nodes(f"stale-{plugin}-half", *common, *how, seed=seeds)
                self.assert_stopped(half, STALE, before_a_step=True, what=f"{plugin} {how}")

    def test_a_copy_of_node_0s_checkpoint_resumes_bit_for_bit(self):
        # Node 1's checkpoint-6 replaced by a copy of node 0's: the same checkpoint, though its
        # trainer_state.json says is_world_process_zero true where node 1's own said false.
        full = self.nodes("copy-full", "--save_on_each_node", "--save_steps", "6")
        self.assert_ran(full)
        seeds = self.disks_at(full, 6, "copy")
        seeds = self.with_node_1s(seeds, os.path.join(seeds[0], "checkpoint-6"), "copy")
        half = self.nodes("copy-half", "--save_on_each_node", "--save_steps", "6", seed=seeds)
        self.assert_ran(half)
        for node in range(2):
            self.assertEqual(self.read(half[node][3], "model.safetensors"),
                             self.read(full[node][3], "model.safetensors"), f"node {node}")
            self.assertEqual(self.losses(half[node][3]), self.losses(full[node][3]), f"node {node}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
