"""Data-parallel training on the CPU: 2 Gloo processes under torchrun, tiny preset."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch.distributed as dist

from brainsynth.train import checkpoint as ckpt

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with Gloo is not available")

WORKER = textwrap.dedent("""
    import json, sys
    import torch
    import torch.distributed as dist
    from brainsynth.config import load_config
    from brainsynth.train import distributed, loop

    dataset, out, report, model = sys.argv[1:5]
    real_shutdown = distributed.shutdown
    distributed.shutdown = lambda info: None  # keep the group to compare the ranks afterwards
    trainers = []
    original_run = loop.Trainer.run
    def run(self, **kwargs):
        trainers.append(self)
        return original_run(self, **kwargs)
    loop.Trainer.run = run
    loop.train(dataset, out, load_config("tiny").train[model])
    t = trainers[0]
    flat = torch.cat([p.detach().flatten() for m in t._networks() for p in m.parameters()])
    both = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(both, flat)
    if dist.get_rank() == 0:
        with open(report, "w") as f:
            json.dump({"world": dist.get_world_size(), "identical": bool(torch.equal(both[0], both[1]))}, f)
    real_shutdown(t.info)
""")


@pytest.mark.parametrize("model", ["pggan", "ddpm"])
def test_two_processes_count_global_images_and_stay_identical(tiny_dataset, tmp_path, model):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run, report = tmp_path / "run", tmp_path / "report.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tiny_dataset), str(run), str(report), model]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]

    progress = json.loads((run / "progress.json").read_text())
    # The tiny schedule's global batch is 8 (4 per rank): 24 steps x 8 = 192 images, not 24 x 4.
    assert progress == {"images_shown": 192, "target_images": 192, "resolution": 8, "alpha": 1.0, "finished": True}
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    assert state["progress"]["step"] == 24
    lines = (run / "stats.jsonl").read_text().splitlines()
    assert [json.loads(line)["images_shown"] for line in lines] == [32, 64, 96, 128, 160, 192]  # rank 0 only
    assert len(list((run / "tb").iterdir())) == 1

    result = json.loads(report.read_text())
    assert result["world"] == 2
    assert result["identical"]  # averaged gradients keep every rank's networks equal
