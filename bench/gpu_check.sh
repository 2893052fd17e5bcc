#!/usr/bin/env bash
# The GPU check: run it whenever a CUDA machine is lent (one GPU, under 8 minutes).
# It prints the figures bench/RESULTS.md records under "GPU check":
#   1. ResNet-50 bf16 channels_last images/s fed from shards (the trainer's loader, 256 px JPEGs,
#      random-resized-crop 224 on the GPU) vs the same batch kept on the GPU (synthetic);
#   2. the masked vs dense step of ResNet-50 at 80 % pruned (masks in the weights' strides);
#   3. DDP with the bf16 gradient-compression hook and SyncBatchNorm on NCCL (one process);
#   4. one short IMP search end to end through `lth run` on the GPU: ResNet-50, level 0 and
#      one pruned level (2 epochs each, rewind to epoch 1, fused SGD, bf16), then its report.
#
#   bench/gpu_check.sh [WORKDIR]        # default: a fresh temporary directory
#   PY=/path/to/python bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
if [[ -z "${PY:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
LTH=("$PY" -m lth)
WORK=${1:-$(mktemp -d -t lth-gpu-check-XXXXXX)}
mkdir -p "$WORK"
export PYTHONPATH=$ROOT/operator:$ROOT/trainer:$ROOT/spark:$ROOT
began=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - began )) s)"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" - <<'PY'
import os, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}, {os.cpu_count()} CPUs, "
      f"GPU available: {torch.cuda.is_available()}")
assert torch.cuda.is_available(), "no CUDA GPU: nothing to check"
PY

step "1-2: ResNet-50 real shards vs synthetic; masked vs dense at 80 % pruned"
timeout 330 "$PY" bench/bench_trainer.py --gpu-only --size 256 --images 4096 --gpu-batch 256 \
    --gpu-steps 60 --data "$WORK/data"

step "3: DDP + bf16 gradient compression + SyncBatchNorm + fused SGD on NCCL (world size 1)"
MASTER_ADDR=127.0.0.1 MASTER_PORT=29531 RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 timeout 120 "$PY" - <<'PY'
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lth.api import RunSpec
from lth_trainer import pruning
from lth_trainer.models import build_model
from lth_trainer.optim import build_optimizer
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

dist.init_process_group("nccl")
device = torch.device("cuda", 0)
spec = RunSpec.model_validate({"dataset": {"path": "x"}, "training": {"syncBatchNorm": True}})
model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(build_model("resnet50", 10, 224, 0)).to(device)
model.to(memory_format=torch.channels_last)
optimizer = build_optimizer(spec.training, model)
assert all(group["fused"] for group in optimizer.param_groups), "SGD is not fused on CUDA"
mask = pruning.prune_global_magnitude(dict(model.state_dict()), pruning.full_mask(model, []), 0.8)
pairs = pruning.gradient_masks(dict(model.named_parameters()), mask)
with torch.no_grad():  # as the trainer starts a level: pruned weights 0
    for weight, keep in pairs:
        weight.mul_(keep)
net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0])
net.register_comm_hook(None, default_hooks.bf16_compress_hook)
x = torch.randn(32, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (32,), device=device)
for _ in range(3):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = F.cross_entropy(net(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    pruning.mask_gradients([w for w, _ in pairs], [k for _, k in pairs])
    optimizer.step()
strides = all(k.stride() == w.grad.stride() for w, k in pairs)
zero = all(not w[k == 0].any() for w, k in pairs)
print(f"DDP bf16 hook + SyncBatchNorm + fused SGD: loss {float(loss):.3f}, mask strides match "
      f"gradients: {strides}, pruned weights exactly 0: {zero}")
assert strides and zero
dist.destroy_process_group()
PY

step "4: lth run, ResNet-50, level 0 + level 1 on the GPU"
cat > "$WORK/gpu-check.yaml" <<YAML
apiVersion: lth.dev/v1alpha1
kind: LotteryTicketRun
metadata:
  name: gpu-check
spec:
  dataset: {format: prepared, path: $WORK/data, imageSize: 256}
  model: {arch: resnet50}
  training:
    epochs: 2
    batchSize: 256
    lr: 0.1
    milestones: [1]
    warmupEpochs: 0
    precision: bf16
    workers: 8
  pruning: {fraction: 0.2, levels: 1, rewindTo: 1ep}
  resources: {gpusPerPod: 1, cpu: "16", memory: 64Gi, shmSize: 8Gi}
YAML
"${LTH[@]}" validate "$WORK/gpu-check.yaml"
timeout 240 "${LTH[@]}" run "$WORK/gpu-check.yaml" --root "$WORK" --nproc 1
"${LTH[@]}" status "$WORK/runs/gpu-check"
"$PY" - "$WORK/runs/gpu-check" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
for level in ("00", "01"):
    result = json.loads((run / "levels" / level / "result.json").read_text())
    start = json.loads((run / "levels" / level / "start.json").read_text())
    print(f"level {level}: density {result['density']:.3f}, top-1 {result['top1']:.1f} % (random labels: about 10 "
          f"% expected), {result['imagesPerSecond']:.0f} images/s, {result['durationSeconds']:.0f} s; "
          f"start step {start['step']}, crop {start.get('crop')}, {start.get('evaluation')}")
PY

step "done in $(( $(date +%s) - began )) s (goal: under 480 s)"
